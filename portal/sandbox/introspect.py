"""Unauthenticated /_sandbox/* endpoints that let tests and testers see what happened."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .delivery import get_deliverer
from .state import get_state

# No auth on purpose: the sandbox is a local test tool, and these endpoints return only
# UUIDs and delivery outcomes, never the names or other personal data it holds.
bp = Blueprint("introspect", __name__, url_prefix="/_sandbox")


@bp.get("/deliveries")
def deliveries() -> dict[str, Any]:
    """Return the webhook delivery log, oldest first, including queued and failed ones."""
    log = get_deliverer().snapshot()
    return {"count": len(log), "deliveries": log}


@bp.get("/users")
def users() -> dict[str, Any]:
    """Return the access codes of every user created so far, in creation order."""
    codes = get_state().user_codes()
    return {"count": len(codes), "userAccessCodes": codes}
