"""Small request-time helpers shared by the views: the client, signed links, headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app

from portal.client import AuthenticateClient
from portal.tokens import LinkSigner

STATUS_PURPOSE = "status"


def get_client() -> AuthenticateClient:
    """Return the app's Authenticate client (tests put a fake in the same slot)."""
    return current_app.extensions["portal.client"]


def status_signer() -> LinkSigner:
    """Return the signer for status links."""
    return LinkSigner(current_app.config["SECRET_KEY"], STATUS_PURPOSE)


def load_status_token(token: str) -> str:
    """Return the UUID in a status token; raises TokenExpired or TokenInvalid."""
    return status_signer().loads(token, max_age=int(current_app.config["STATUS_LINK_MAX_AGE"]))


def external_url(endpoint: str, **values: Any) -> str:
    """Build an absolute URL from PORTAL_EXTERNAL_URL, never from the request's Host header."""
    base = urlsplit(current_app.config["EXTERNAL_URL"])
    adapter = current_app.url_map.bind(
        base.netloc, script_name=base.path or "/", url_scheme=base.scheme
    )
    return adapter.build(endpoint, values, force_external=True)


def status_url(user_access_code: str) -> str:
    """Return the signed, external status URL for a UUID."""
    return external_url("status.page", token=status_signer().dumps(user_access_code))


def add_security_headers(response: Response) -> Response:
    """Set headers every response should carry."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    # Status and next-step URLs carry a signed token: never send them to another site.
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response
