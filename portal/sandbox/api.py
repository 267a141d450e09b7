"""The emulated Authenticate REST endpoints, served under both "/" and "/mock/"."""

from __future__ import annotations

import hmac
import ipaddress
import re
import time
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from .config import is_http_url
from .delivery import format_event_date
from .state import MOCK_FIXTURE_UACS, get_state

bp = Blueprint("api", __name__)

MOCK_NAME = "mock"
REQUIRED_FIELDS = ("firstName", "lastName", "dob", "email")
# Personal data kept in memory for realism; it is never logged or returned.
PROFILE_FIELDS = frozenset(
    {
        *REQUIRED_FIELDS,
        "middleName",
        "phone",
        "houseNumber",
        "streetName",
        "address",
        "city",
        "state",
        "zipCode",
        "ssn",
        "country",
    }
)
DOB_PATTERN = re.compile(r"([0-9]{2})-([0-9]{2})-([0-9]{4})")


class ApiError(Exception):
    """An API failure answered as {"errorMessage": ...} with the given HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def register(app: Flask) -> None:
    """Mount the API at "/" (Bearer required) and again at "/mock" (Bearer optional)."""
    app.register_blueprint(bp)
    app.register_blueprint(bp, url_prefix="/mock", name=MOCK_NAME)
    app.register_error_handler(ApiError, _api_error)


def error_response(status: int, message: str) -> tuple[Response, int]:
    """Build the upstream's error shape, {"errorMessage": text}."""
    return jsonify(errorMessage=message), status


def _api_error(exc: ApiError) -> tuple[Response, int]:
    """Render an ApiError raised by any API view or hook."""
    response, status = error_response(exc.status, exc.message)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response, status


@bp.before_request
def _delay_and_authenticate() -> None:
    """Apply RESPONSE_DELAY to every answer, then enforce the Bearer key outside /mock."""
    delay = current_app.config["RESPONSE_DELAY"]
    if delay:
        time.sleep(delay)
    # The hosted mock works without an Authorization header and whether it checks a key
    # that is sent is undocumented (contract §1), so /mock ignores the header entirely.
    if request.blueprint == MOCK_NAME:
        return
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    expected = current_app.config["API_KEY"]
    valid = scheme.lower() == "bearer" and hmac.compare_digest(
        key.strip().encode(), expected.encode()
    )
    if not valid:
        raise ApiError(401, "Missing or invalid API key.")


def _json_object() -> dict[str, Any]:
    """Return the request body, insisting on a JSON object sent as application/json."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    return body


def _is_real_dob(value: str) -> bool:
    """Tell whether value is DD-MM-YYYY and names a real calendar date."""
    match = DOB_PATTERN.fullmatch(value)
    if match is None:
        return False
    day, month, year = (int(part) for part in match.groups())
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True


@bp.post("/user/create")
def create_user() -> dict[str, Any]:
    """Create a user and return a new uuid4 every call, as the real API has no dedupe."""
    body = _json_object()
    for name in REQUIRED_FIELDS:
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ApiError(400, f"{name} is required.")
    if not _is_real_dob(body["dob"]):
        raise ApiError(400, "dob must be a real date in DD-MM-YYYY format.")
    profile = {key: value for key, value in body.items() if key in PROFILE_FIELDS}
    return {"userAccessCode": get_state().add_user(profile)}


def _is_loopback(host: str) -> bool:
    """Tell whether host is localhost or a loopback IP (127.0.0.0/8, ::1)."""
    if host.rstrip(".").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redirect_url(value: object) -> str | None:
    """Validate redirectURL: https, or http to a loopback host so local portals can test."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "redirectURL must be a string.")
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        host = None
    if host and (parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))):
        return value
    # Upstream requires an "SSL secured" URL; 403 is what one client observed (contract §2.1).
    raise ApiError(403, "redirectURL must be an https URL.")


@bp.post("/user/jwt")
def issue_jwt() -> dict[str, Any]:
    """Issue a Medallion token (and jwt) that expires after TOKEN_TTL seconds."""
    body = _json_object()
    code = body.get("userAccessCode")
    if not isinstance(code, str) or not code:
        raise ApiError(400, "userAccessCode is required.")
    state = get_state()
    if request.blueprint == MOCK_NAME and code in MOCK_FIXTURE_UACS:
        state.ensure_fixture_user(code)
    user = state.get_user(code)
    # Unknown codes get 400, not 404: upstream's answer is undocumented and clients are told
    # to treat every non-2xx alike, so the sandbox keeps one status for every bad input.
    if user is None:
        raise ApiError(400, "User not found.")
    redirect_url = _redirect_url(body.get("redirectURL"))
    workflow = body.get("preferredWorkflowID")
    if workflow is not None and not isinstance(workflow, str):
        raise ApiError(400, "preferredWorkflowID must be a string.")
    if user.completed:
        raise ApiError(400, "User has already completed verification.")
    token = state.issue_token(code, redirect_url, workflow, current_app.config["TOKEN_TTL"])
    return {"jwt": token.jwt, "token": token.token}


@bp.get("/user/medallion/<token>/status")
def token_status(token: str) -> dict[str, Any]:
    """Report a token's latest raw status, attempt count and expiry."""
    state = get_state()
    record = state.find_token(token)
    if record is None:
        raise ApiError(404, "Token not found.")
    user = state.get_user(record.user_access_code)
    status = user.last_status if user else None
    method = current_app.config["VERIFICATION_METHOD"] if status is not None else None
    # Upstream's response schema is undocumented (contract §7); these keys are the
    # sandbox's own choice, so portal code must not treat them as the real contract.
    return {
        "token": record.token,
        "userAccessCode": record.user_access_code,
        "status": status,
        "verificationMethod": method,
        "attempts": record.attempts,
        "completed": bool(user and user.completed),
        "expired": record.expired(),
        "expiresAt": format_event_date(record.expires_at),
    }


@bp.post("/company/webhook")
def subscribe_webhook() -> dict[str, Any]:
    """Point webhook deliveries at webhookURL; companyAccessCode is accepted unchecked."""
    body = _json_object()
    url = body.get("webhookURL")
    if not is_http_url(url):
        raise ApiError(400, "webhookURL must be an http(s) URL.")
    get_state().set_webhook_url(url)
    return {"success": True}
