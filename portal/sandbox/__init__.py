"""Local emulator of the Authenticate API subset the portal uses, plus a Medallion stand-in.

It is a separate Flask app on its own port and imports nothing from the rest of the portal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from . import api, introspect, medallion
from .config import load_config
from .delivery import Deliverer, Signing
from .server import serve
from .state import SandboxState

__all__ = ["create_app", "serve"]


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build a sandbox app with its own users, tokens and webhook worker."""
    # No static folder: the one stylesheet is served from templates/ by the medallion views.
    app = Flask(__name__, static_folder=None)
    load_config(app, config)
    state = SandboxState(app.config["WEBHOOK_URL"])
    app.extensions["sandbox.state"] = state
    app.extensions["sandbox.deliverer"] = Deliverer(
        state.webhook_urls,
        max_attempts=app.config["WEBHOOK_MAX_ATTEMPTS"],
        backoff=app.config["WEBHOOK_BACKOFF"],
        timeout=app.config["WEBHOOK_TIMEOUT"],
        delay=app.config["WEBHOOK_DELAY"],
        signing=_signing(app.config),
    )
    api.register(app)
    app.register_blueprint(medallion.bp)
    app.register_blueprint(introspect.bp)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _signing(config: Mapping[str, Any]) -> Signing | None:
    """Return the webhook signer when a signing secret is configured."""
    if not config["WEBHOOK_HMAC_SECRET"]:
        return None
    return Signing(
        secret=config["WEBHOOK_HMAC_SECRET"],
        signature_header=config["WEBHOOK_HMAC_HEADER"],
        timestamp_header=config["WEBHOOK_HMAC_TIMESTAMP_HEADER"],
    )


def _is_page_request() -> bool:
    """Tell whether the request is for the Medallion page rather than the JSON API."""
    # Routing errors (404/405) carry no blueprint, so the page is also recognised by path.
    path = request.path
    return request.blueprint == medallion.bp.name or path == "/" or path.startswith("/medallion")


def _http_error(exc: HTTPException) -> tuple[Response | str, int]:
    """Answer HTTP errors as an HTML page on the Medallion paths and as JSON elsewhere."""
    status = exc.code or 500
    if _is_page_request():
        return medallion.render_problem(status, exc.name, "Something went wrong on this page.")
    return api.error_response(status, exc.description or exc.name)
