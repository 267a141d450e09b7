"""Rate-limit values and keys shared by views (Flask-Limiter reads them per request)."""

from __future__ import annotations

import hashlib
import hmac

from flask import Response, current_app, request

from portal.tokens import LinkSigner


def client_address() -> str:
    """Key limits by client address, keyed-hashed: the counters live in Redis when it is
    configured, and an IP address is personal data the portal does not keep.

    The address is the one ProxyFix settled from PORTAL_TRUSTED_PROXIES; the key is an HMAC
    under SECRET_KEY, so instances sharing the secret share counters, and nobody can list the
    IPv4 space to read addresses back from the keys.
    """
    address = (request.remote_addr or "").encode()
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return "client:" + hmac.new(secret, address, hashlib.sha256).hexdigest()[:32]


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


def onboarding_global_limit() -> str:
    """Return the limit on users created from all addresses together."""
    return str(current_app.config["ONBOARDING_GLOBAL_RATE_LIMIT"])


def everyone() -> str:
    """Key every request alike, so one counter spans all client addresses and instances."""
    return "all-clients"


def created_a_user(response: Response) -> bool:
    """Count only submits that went on to a next step, not forms refused for bad input."""
    return response.status_code == 303
