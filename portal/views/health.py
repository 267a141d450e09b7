"""Probes for load balancers and orchestrators: liveness and readiness."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy.exc import SQLAlchemyError

from portal.helpers import no_store
from portal.store import readiness

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

# A probe that waits longer than this is worse than one that says "not ready".
READY_QUERY_TIMEOUT_MS = 2000
UPGRADE = "run: flask --app portal db upgrade"
_last_problem: list[str | None] = [None]


@bp.get("/healthz")
def healthz() -> Response:
    """Answer while the process serves requests. No database: an outage must not restart us."""
    return no_store(jsonify(status="ok"))


@bp.get("/readyz")
def readyz() -> Response | tuple[Response, int]:
    """Answer 200 when the database answers and its schema is not behind the code, else 503."""
    try:
        database = readiness.database_heads(READY_QUERY_TIMEOUT_MS)
    except SQLAlchemyError as exc:
        return not_ready("database unreachable", type(exc).__name__)
    state = readiness.schema_state(database)
    where = f"database at {sorted(database)}, code at {sorted(readiness.code_heads())}"
    if state == readiness.NOT_MIGRATED:
        return not_ready("database not migrated", UPGRADE)
    if state == readiness.BEHIND:
        return not_ready("database schema is behind the code", f"{where}; {UPGRADE}")
    note_problem(None)
    if state == readiness.AHEAD:
        return no_store(jsonify(status="ready", detail=f"{where}: migrated by a newer release"))
    return no_store(jsonify(status="ready"))


def not_ready(reason: str, detail: str) -> tuple[Response, int]:
    """Say why the instance should get no traffic (503), logging it once per change."""
    note_problem(f"{reason}: {detail}")
    return no_store(jsonify(status="unavailable", reason=reason, detail=detail)), 503


def note_problem(problem: str | None) -> None:
    """Log readiness changes only: probes come every few seconds, the change is the news."""
    if problem == _last_problem[0]:
        return
    if problem is None:
        logger.info("ready again")
    else:
        logger.warning("not ready: %s", problem)
    _last_problem[0] = problem
