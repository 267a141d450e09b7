"""Rate-limit values and keys shared by views (Flask-Limiter reads them per request)."""

from __future__ import annotations

from flask import Response, current_app, request

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


def sent_an_email(response: Response) -> bool:
    """Count only requests that sent (or tried to send) an email: typos cost nothing."""
    return response.status_code == 303


def onboarding_limit() -> str:
    """Return the limit on users created per client address (each one is billed upstream)."""
    return str(current_app.config["ONBOARDING_RATE_LIMIT"])


def created_a_user(response: Response) -> bool:
    """Count only submits that went on to a next step, not forms refused for bad input."""
    return response.status_code == 303
