"""The readiness check's reads: can the database answer, and is its schema current.

Alembic is not imported here: /readyz runs in every serving worker, every few seconds, and
Alembic (with Mako and Pygments) would cost each worker about 11 MB for two lookups that
need none of it. The scripts' own `revision` and `down_revision` lines are read instead
(tests/test_health.py checks the answer against Alembic's).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from sqlalchemy import inspect, text

from portal.extensions import db

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"
REVISION_NAMES = ("revision", "down_revision")

CURRENT, AHEAD, BEHIND, NOT_MIGRATED = "current", "ahead", "behind", "not migrated"


@cache
def _graph() -> dict[str, frozenset[str]]:
    """Map each migration script's revision to the revision(s) it follows."""
    graph = {}
    for script in sorted((MIGRATIONS / "versions").glob("*.py")):
        names: dict[str, object] = {}
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in REVISION_NAMES:
                        names[target.id] = ast.literal_eval(node.value)  # type: ignore[arg-type]
        if isinstance(names.get("revision"), str):
            down = names.get("down_revision")
            follows = (down,) if isinstance(down, str) else tuple(down or ())
            graph[str(names["revision"])] = frozenset(follows)
    return graph


@cache
def code_heads() -> frozenset[str]:
    """Return the migration head(s) this code expects: revisions no other script follows."""
    graph = _graph()
    followed = frozenset().union(*graph.values()) if graph else frozenset()
    return frozenset(graph) - followed


@cache
def known_revisions() -> frozenset[str]:
    """Return every revision this code has a migration script for."""
    return frozenset(_graph())


def database_heads(timeout_ms: int) -> frozenset[str]:
    """Return the revision(s) the database is migrated to; empty if it was never migrated.

    Raises SQLAlchemyError when the database cannot be reached. On PostgreSQL the query
    gives up after `timeout_ms`; opening the connection is bounded by
    PORTAL_DATABASE_CONNECT_TIMEOUT.
    """
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
        heads: frozenset[str] = frozenset()
        if inspect(connection).has_table(VERSION_TABLE):
            rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
            heads = frozenset(row[0] for row in rows)
        connection.rollback()
    return heads


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
