"""Rate-limit values and keys shared by views (Flask-Limiter reads them per request)."""

from __future__ import annotations

from flask import current_app, request

from portal.tokens import LinkSigner


def resend_limit() -> str:
    """Return the limit on link emails, per signed link and per client address."""
    return str(current_app.config["EMAIL_RESEND_RATE_LIMIT"])


def resend_key() -> str:
    """Key link-email requests by the UUID behind the link, so fresh tokens share a count."""
    token = (request.view_args or {}).get("token", "")
    for purpose in ("status", "resume"):
        genuine, value = LinkSigner(current_app.config["SECRET_KEY"], purpose).peek(token)
        if genuine and isinstance(value, str):
            return f"resend:{value}"
    return f"resend-token:{token}"
