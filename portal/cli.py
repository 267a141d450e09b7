"""Flask commands for operators: `flask --app portal <command>`."""

from __future__ import annotations

import getpass
import sys
import uuid
from datetime import datetime, timedelta

import click
from flask import current_app
from flask.cli import with_appcontext

from portal.config import deployment_problems
from portal.helpers import external_url, get_client
from portal.models import utcnow
from portal.reconcile import reconcile
from portal.store import admin as admin_store
from portal.store import retention, rollup


def webhook_url() -> str:
    """Return the full webhook URL to register with Authenticate (POST /company/webhook)."""
    return external_url("webhooks.receive", secret=current_app.config["WEBHOOK_SECRET"])


@click.command("webhook-url")
@with_appcontext
def webhook_url_command() -> None:
    """Print the URL to register as the Authenticate webhook."""
    click.echo(webhook_url())


@click.command("reconcile")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds a record must have been idle (default: PORTAL_RECONCILE_AFTER).",
)
@with_appcontext
def reconcile_command(older_than: float | None) -> None:
    """Ask Authenticate about undecided records that stopped moving; recover missed webhooks."""
    outcomes = reconcile(get_client(), current_app.config, older_than)
    if not outcomes:
        click.echo("Nothing to re-check.")
    for outcome, count in sorted(outcomes.items()):
        click.echo(f"{outcome}: {count}")
    if outcomes["unavailable"]:
        # A non-zero exit lets cron or a scheduler notice that Authenticate was unreachable.
        raise SystemExit(1)


MIN_PASSWORD_LENGTH = 12


@click.group("admin")
def admin_group() -> None:
    """Manage dashboard accounts."""


def read_password(from_stdin: bool) -> str:
    """Read a new password from stdin (for scripts) or an interactive prompt, and check it."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"Use a password of at least {MIN_PASSWORD_LENGTH} characters.")
    return password


password_stdin = click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input."
)


@admin_group.command("create")
@click.argument("username")
@password_stdin
@with_appcontext
def create_admin_command(username: str, password_stdin: bool) -> None:
    """Create an admin account."""
    try:
        admin = admin_store.add_admin(username, read_password(password_stdin))
    except admin_store.AdminExists as exc:
        raise click.ClickException(f"An admin called {exc} already exists.") from exc
    click.echo(f"Created admin {admin.username}.")


@admin_group.command("reset-password")
@click.argument("username")
@password_stdin
@with_appcontext
def reset_password_command(username: str, password_stdin: bool) -> None:
    """Set a new password; the admin's sessions end everywhere."""
    try:
        admin = admin_store.set_password(username, read_password(password_stdin))
    except admin_store.NoSuchAdmin as exc:
        raise click.ClickException(f"No admin called {exc}.") from exc
    click.echo(f"New password set for {admin.username}; their sessions have ended.")


@admin_group.command("disable")
@click.argument("username")
@with_appcontext
def disable_command(username: str) -> None:
    """Disable an account; its sessions end everywhere."""
    try:
        admin = admin_store.disable_admin(username)
    except admin_store.NoSuchAdmin as exc:
        raise click.ClickException(f"No admin called {exc}.") from exc
    click.echo(f"Disabled {admin.username}.")


# AuditEntry.admin holds at most this many characters.
ACTOR_LENGTH = 64


def actor_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """Return who runs a command, for the audit log: --by, else "cli:" and the login name."""
    if value is None:
        try:
            login = getpass.getuser()
        except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (containers)
            login = "unknown"
        return f"cli:{login}"[:ACTOR_LENGTH]
    value = value.strip()
    if not value or len(value) > ACTOR_LENGTH or not value.isprintable():
        raise click.BadParameter(f"give a name of 1 to {ACTOR_LENGTH} printable characters")
    return value


by_option = click.option(
    "--by",
    callback=actor_name,
    metavar="NAME",
    help="Who is running this, for the audit log (default: cli:$USER).",
)


def echo_counts(removed: retention.Removed) -> None:
    """Print one "kind: count" line per kind of row."""
    for line in removed.describe().split(", "):
        count, _, kind = line.partition(" ")
        click.echo(f"{kind}: {count}")


@click.command("purge")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    default=None,
    metavar="DAYS",
    help="Days without activity before a record goes (default: PORTAL_RETENTION_DAYS).",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=retention.BATCH_SIZE,
    show_default=True,
    help="Rows deleted per transaction.",
)
@by_option
@with_appcontext
def purge_command(days: int | None, dry_run: bool, batch_size: int, by: str) -> None:
    """Delete records idle for longer than the retention age, with their webhook events and
    submit keys, and orphan webhook events older than it. Written to the audit log.

    Age counts from a record's last activity (a state change, a link handed out, any webhook
    for it), not from its creation: a verification still under way is never purged, however
    long ago it started, and a person holding a recent status link still finds it.

    Deletes in batches, each a short transaction, so it can run while the portal serves,
    e.g. daily from cron.
    """
    days = days or int(current_app.config["RETENTION_DAYS"])
    if days < 1:
        raise click.ClickException("PORTAL_RETENTION_DAYS must be at least 1.")
    cutoff = utcnow() - timedelta(days=days)
    since = f"idle since before {describe_time(cutoff)} ({days} days)"
    if dry_run:
        click.echo(f"Dry run, nothing deleted. Would delete, for records {since}:")
        echo_counts(retention.count_purgeable(cutoff))
        return
    removed = retention.purge(cutoff, by, batch_size)
    click.echo(f"Deleted, for records {since}:")
    echo_counts(removed)


def describe_time(when: datetime) -> str:
    """Format a UTC time to the minute for operators."""
    return when.strftime("%Y-%m-%d %H:%M UTC")


@click.command("erase")
@click.argument("user_access_code", metavar="UUID")
@by_option
@with_appcontext
def erase_command(user_access_code: str, by: str) -> None:
    """Delete everything held for one UUID (its record, webhook events and submit key) on
    request. Written to the audit log.

    A webhook that arrives for it afterwards is kept as an orphan, and purged by age.
    """
    try:
        code = str(uuid.UUID(user_access_code.strip()))
    except ValueError:
        raise click.BadParameter(f"{user_access_code!r} is not a UUID", param_hint="UUID") from None
    removed = retention.erase(code, by)
    if not removed.anything:
        raise click.ClickException(f"Nothing is held for {code}: no record, events or submit key.")
    click.echo(f"Erased {code}:")
    echo_counts(removed)


@click.group("dashboard")
def dashboard_group() -> None:
    """Maintain the admin dashboard's daily roll-up."""


@dashboard_group.command("rebuild")
@with_appcontext
def rebuild_dashboard_command() -> None:
    """Recount the roll-up from the records (a repair; safe while the portal serves)."""
    counted = rollup.rebuild()
    click.echo(f"Rebuilt the dashboard roll-up from {counted} record{'' if counted == 1 else 's'}.")


@click.command("check-config")
@with_appcontext
def check_config_command() -> None:
    """Name each missing or unsafe production setting; exit 1 if any is an error."""
    errors, warnings = deployment_problems(current_app.config)
    for problem in errors:
        click.echo(f"error: {problem}")
    for problem in warnings:
        click.echo(f"warning: {problem}")
    if errors:
        raise SystemExit(1)
    click.echo("Configuration OK" + (" (with warnings)." if warnings else "."))


commands = [
    check_config_command,
    webhook_url_command,
    reconcile_command,
    admin_group,
    purge_command,
    erase_command,
    dashboard_group,
]
