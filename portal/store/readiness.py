"""The readiness check's reads: can the database answer, and is its schema current."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from portal.extensions import db

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

CURRENT, AHEAD, BEHIND, NOT_MIGRATED = "current", "ahead", "behind", "not migrated"


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS))


@cache
def code_heads() -> frozenset[str]:
    """Return the migration head(s) this code expects; read once, scripts don't change."""
    return frozenset(_scripts().get_heads())


@cache
def known_revisions() -> frozenset[str]:
    """Return every revision this code has a migration script for."""
    return frozenset(script.revision for script in _scripts().walk_revisions())


def database_heads(timeout_ms: int) -> frozenset[str]:
    """Return the revision(s) the database is migrated to; empty if it was never migrated.

    Raises SQLAlchemyError when the database cannot be reached. On PostgreSQL the query
    gives up after `timeout_ms`; opening the connection is bounded by
    PORTAL_DATABASE_CONNECT_TIMEOUT.
    """
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
        heads = MigrationContext.configure(connection).get_current_heads()
        connection.rollback()
    return frozenset(heads)


def schema_state(database: frozenset[str]) -> str:
    """Place the database's revision(s) against this code's migrations.

    A revision this code has no script for was made by a newer release: during a rolling
    upgrade the database is migrated first, and the older instances keep serving on it.
    """
    if not database:
        return NOT_MIGRATED
    if database == code_heads():
        return CURRENT
    if not database <= known_revisions():
        return AHEAD
    return BEHIND
