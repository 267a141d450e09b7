"""Flask commands for operators: `flask --app portal <command>`."""

from __future__ import annotations

import click
from flask import current_app

from portal.helpers import external_url


def webhook_url() -> str:
    """Return the full webhook URL to register with Authenticate (POST /company/webhook)."""
    return external_url("webhooks.receive", secret=current_app.config["WEBHOOK_SECRET"])


@click.command("webhook-url")
def webhook_url_command() -> None:
    """Print the URL to register as the Authenticate webhook."""
    click.echo(webhook_url())


commands = [webhook_url_command]
