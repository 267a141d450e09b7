"""Flask commands for operators: `flask --app portal <command>`."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from portal.helpers import external_url, get_client
from portal.reconcile import reconcile
from portal.store import admin as admin_store


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


commands = [webhook_url_command, reconcile_command, admin_group]
