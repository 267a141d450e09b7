"""Intake of Authenticate's webhook POSTs."""

from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.wrappers import Response

from portal import store
from portal.config import status_map
from portal.models import PROVIDER_TEXT_LENGTH, UUID_LENGTH

logger = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


class BadEvent(ValueError):
    """The delivery is not a webhook envelope this portal can record."""


@bp.post("/authenticate/<secret>")
def receive(secret: str) -> tuple[Response, int]:
    """Record one delivery; 2xx only once it is committed, 503 if the database is down."""
    if not secret_matches(secret):
        abort(404)
    if request.mimetype != "application/json":
        return jsonify(error="Content-Type must be application/json"), 415
    request.max_content_length = int(current_app.config["WEBHOOK_MAX_BYTES"])
    try:
        event = parse_event(request.get_json(silent=True))
    except BadEvent as exc:
        logger.info("webhook refused: %s", exc)
        return jsonify(error=str(exc)), 400
    try:
        outcome = store.record_event(event, status_map(current_app.config))
    except DBAPIError:
        logger.exception("webhook %s not recorded: database unavailable", event.event_id)
        return jsonify(error="temporarily unavailable, retry later"), 503
    logger.info(
        "webhook %s %s for %s: %s",
        event.event_id,
        event.event_type,
        event.user_access_code,
        outcome,
    )
    return jsonify(outcome=outcome), 200


def secret_matches(candidate: str) -> bool:
    """Compare against the current and the previous secret, in constant time."""
    secrets = [current_app.config["WEBHOOK_SECRET"], current_app.config["WEBHOOK_PREVIOUS_SECRET"]]
    matched = False
    for secret in secrets:
        if secret:
            matched |= hmac.compare_digest(candidate.encode(), str(secret).encode())
    return matched


def parse_event(body: Any) -> store.IncomingEvent:
    """Pick the allow-listed fields out of a delivery, checking each one's type."""
    if not isinstance(body, dict):
        raise BadEvent("body must be a JSON object")
    order = body.get("order")
    if not isinstance(order, dict):
        raise BadEvent("order must be an object")
    event_type = text(body, "event", 64, required=True)
    is_status = event_type == store.STATUS_EVENT
    return store.IncomingEvent(
        event_id=text(body, "id", PROVIDER_TEXT_LENGTH, required=True),
        event_type=event_type,
        user_access_code=text(order, "userAccessCode", UUID_LENGTH, required=is_status),
        raw_status=text(order, "status", PROVIDER_TEXT_LENGTH, required=is_status),
        verification_method=text(order, "verificationMethod", PROVIDER_TEXT_LENGTH),
        event_date=event_date(body.get("eventDate"), required=is_status),
    )


def text(source: dict[str, Any], key: str, limit: int, required: bool = False) -> str | None:
    """Return a string field, or None when it is absent and optional."""
    value = source.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadEvent(f"{key} must be a non-empty string")
    if len(value) > limit:
        raise BadEvent(f"{key} is longer than {limit} characters")
    return value


def event_date(value: Any, required: bool) -> datetime | None:
    """Parse eventDate (ISO 8601); a date without a zone is taken as UTC."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadEvent("eventDate must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadEvent("eventDate is not an ISO 8601 date") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
