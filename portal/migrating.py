"""Schema migrations (Flask-Migrate, on Alembic), wired in only where migrations run.

A serving worker never migrates, and Alembic with Mako and Pygments costs each worker about
11 MB. So create_app registers `flask db` as a group that loads Flask-Migrate when a `db`
command is looked up, and code that migrates in-process (`make run`, the benchmarks, the
migration tests) calls `init_migrations(app)` before Flask-Migrate's `upgrade()`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app, g
from flask.cli import with_appcontext

from portal.extensions import db

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def init_migrations(app: Flask) -> None:
    """Bind Flask-Migrate to `app` (once), so its commands and functions can run."""
    if "migrate" not in app.extensions:
        from flask_migrate import Migrate

        Migrate(app, db, directory=str(MIGRATIONS))


class MigrationCommands(click.Group):
    """`flask db ...`: Flask-Migrate's own commands, imported when one is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._commands().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> Any:
        return self._commands().get_command(ctx, name)

    @staticmethod
    def _commands() -> click.Group:
        # The flask CLI has loaded the app and pushed its context by the time a
        # subcommand is looked up.
        init_migrations(current_app._get_current_object())  # type: ignore[attr-defined]
        from flask_migrate.cli import db as flask_migrate_commands

        return flask_migrate_commands


@click.group("db", cls=MigrationCommands)
@click.option("-d", "--directory", default=None, help="Migration script directory.")
@click.option("-x", "--x-arg", multiple=True, help="Extra arguments for env.py.")
@with_appcontext
def db_commands(directory: str | None, x_arg: tuple[str, ...]) -> None:
    """Create and apply database migrations (Alembic)."""
    # What Flask-Migrate's own group does before its commands run: they read these.
    g.directory = directory
    g.x_arg = x_arg
