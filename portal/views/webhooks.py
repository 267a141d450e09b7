"""Intake of Authenticate's webhook POSTs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.wrappers import Response

from portal import metrics, refusals, store
from portal.config import status_map
from portal.extensions import limiter
from portal.models import PROVIDER_TEXT_LENGTH, UUID_LENGTH

logger = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


class BadEvent(ValueError):
    """The delivery is not a webhook envelope this portal can record."""


@bp.after_request
def count_refusals(response: Response) -> Response:
    """Count every refused delivery for the admin health panel, outside the database."""
    if response.status_code >= 400:
        metrics.count_webhook(f"refused_{response.status_code}")
        refusals.count_refusal(response.status_code)
    return response


def rate_limit() -> str:
    return str(current_app.config["WEBHOOK_RATE_LIMIT"])


# Every method is routed here so that, without the secret, any request gets the same 404 as
# an unknown path (a 405 would confirm the route exists). Only refused requests count toward
# the rate limit: it stops guessing and garbage, never a burst of real deliveries.
@bp.route("/authenticate/<secret>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
@limiter.limit(rate_limit, deduct_when=lambda response: response.status_code >= 400)
def receive(secret: str) -> tuple[Response, int]:
    """Record one delivery; 2xx only once it is committed, 503 if the database is down."""
    if not secret_matches(secret):
        abort(404)
    if request.method != "POST":
        abort(405)
    if request.mimetype != "application/json":
        return jsonify(error="Content-Type must be application/json"), 415
    request.max_content_length = int(current_app.config["WEBHOOK_MAX_BYTES"])
    problem = signature_problem(request.get_data(), request.headers, current_app.config)
    if problem:
        logger.info("webhook refused: %s", problem)
        return jsonify(error=problem), 401
    try:
        event = parse_event(json_body(request.get_data()))
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
    metrics.count_webhook(outcome)
    return jsonify(outcome=outcome), 200


def secret_matches(candidate: str) -> bool:
    """Compare against the current and the previous secret, in constant time."""
    secrets = [current_app.config["WEBHOOK_SECRET"], current_app.config["WEBHOOK_PREVIOUS_SECRET"]]
    matched = False
    for secret in secrets:
        if secret:
            matched |= hmac.compare_digest(candidate.encode(), str(secret).encode())
    return matched


def json_body(raw: bytes) -> Any:
    """Decode the raw body as JSON, or raise BadEvent."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadEvent("body is not valid JSON") from exc


def signature_problem(
    body: bytes, headers: Mapping[str, str], config: Mapping[str, Any]
) -> str | None:
    """Check the optional HMAC signature; return what is wrong, or None when it holds."""
    secret = config["WEBHOOK_HMAC_SECRET"]
    if not secret:
        return None
    provided = headers.get(config["WEBHOOK_HMAC_HEADER"], "").strip()
    provided = provided.removeprefix("sha256=").lower()
    message = body
    timestamp_header = config["WEBHOOK_HMAC_TIMESTAMP_HEADER"]
    if timestamp_header:
        stamp = headers.get(timestamp_header, "").strip()
        if not stamp.isdigit():
            return f"{timestamp_header} must be a Unix timestamp"
        tolerance = float(config["WEBHOOK_HMAC_TOLERANCE"])
        if tolerance and abs(time.time() - int(stamp)) > tolerance:
            return f"{timestamp_header} is outside the accepted window"
        message = f"{stamp}.".encode() + body
    expected = hmac.new(str(secret).encode(), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(provided.encode(), expected.encode()):
        return "signature does not match"
    return None


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
    # PostgreSQL cannot store NUL; answering 503 for it would make the sender retry forever.
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise BadEvent(f"{key} contains control characters")
    return value


def event_date(value: Any, required: bool) -> datetime | None:
    """Parse eventDate (ISO 8601); a date without a zone is taken as UTC."""
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadEvent("eventDate must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise BadEvent("eventDate is not an ISO 8601 date in range") from exc
