"""Flask commands for operators: `flask --app portal <command>`."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from portal.helpers import external_url, get_client
from portal.reconcile import reconcile


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


commands = [webhook_url_command, reconcile_command]
