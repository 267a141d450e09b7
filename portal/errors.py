"""Error pages: plain words for people, small JSON for programs that ask for it."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.wrappers import Response

from portal.extensions import db

logger = logging.getLogger(__name__)

MESSAGES = {
    400: ("Something was wrong with that request", "Please go back and try again."),
    403: ("Not allowed", "This page isn't available to you."),
    404: ("Page not found", "Check the address. If you followed a link, it may be incomplete."),
    405: ("Not allowed", "That page can't be used that way."),
    410: (
        "This link has expired",
        "For your security, links stop working after a while. Start again from the "
        "beginning, or use the most recent link we sent you.",
    ),
    413: (
        "Too much data",
        "That request was larger than we accept. Please go back, shorten what you typed, "
        "and try again.",
    ),
    415: ("Unsupported format", "That request's format isn't accepted here."),
    429: ("Too many requests", "Please wait a few minutes, then go back and try again."),
    500: ("Something went wrong", "It's our fault, not yours. Please try again shortly."),
    502: ("The verification service had a problem", "Please try again in a moment."),
    503: ("Temporarily unavailable", "Please try again in a moment."),
}


def render_error(code: int, description: str | None = None) -> tuple[Response | str, int]:
    """Render the page (or JSON) for an HTTP error code."""
    title, detail = MESSAGES.get(code, MESSAGES[500] if code >= 500 else MESSAGES[400])
    if wants_json():
        return jsonify(error=title, detail=description or detail), code
    return render_template("errors/error.html", code=code, title=title, detail=detail), code


def wants_json() -> bool:
    """Return True when the client asked for JSON rather than a page."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return (
        best == "application/json"
        and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]
    )


def log_csrf_refusal(exc: CSRFError) -> None:
    """Log why a form failed the CSRF check.

    Flask-WTF's reasons are fixed sentences ("The CSRF token has expired."), so they can be
    logged; without them a refused form is a bare 400 in the log.
    """
    logger.warning("form refused by the CSRF check: %s", exc.description)


def register_error_handlers(app: Flask) -> None:
    """Route every HTTP error, and any unexpected exception, to render_error."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response | str, int]:
        return render_error(exc.code or 500)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[Response | str, int]:
        log_csrf_refusal(exc)
        return render_error(400)

    @app.errorhandler(InternalServerError)
    def server_error(exc: InternalServerError) -> tuple[Response | str, int]:
        db.session.rollback()
        return render_error(500)
