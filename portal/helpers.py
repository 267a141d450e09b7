"""Small request-time helpers shared by the views: the client, signed links, headers."""

from __future__ import annotations

import functools
import logging
from typing import Any
from urllib.parse import urlsplit

import segno
from flask import Response, current_app
from markupsafe import Markup

from portal import mail
from portal.client import AuthenticateClient
from portal.tokens import LinkSigner

logger = logging.getLogger(__name__)

STATUS_PURPOSE = "status"
RESUME_PURPOSE = "resume"


def get_client() -> AuthenticateClient:
    """Return the app's Authenticate client (tests put a fake in the same slot)."""
    return current_app.extensions["portal.client"]


def status_signer() -> LinkSigner:
    """Return the signer for status links."""
    return link_signer(current_app.config["SECRET_KEY"], STATUS_PURPOSE)


def resume_signer() -> LinkSigner:
    """Return the signer for emailed resume links."""
    return link_signer(current_app.config["SECRET_KEY"], RESUME_PURPOSE)


@functools.lru_cache(maxsize=8)
def link_signer(secret_key: str, purpose: str) -> LinkSigner:
    """Return one shared signer per key and purpose: building one costs more than a check."""
    return LinkSigner(secret_key, purpose)


def resume_url(user_access_code: str) -> str:
    """Return the signed, external resume URL for a UUID."""
    return external_url("resume.open_link", token=resume_signer().dumps(user_access_code))


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


def no_store(response: Response) -> Response:
    """Keep a response out of every cache: signed-link, resume and admin pages."""
    response.headers["Cache-Control"] = "no-store"
    return response


# Scripts and styles come only from files under static/: no inline <script>, <style> or
# style="" anywhere (QR codes and charts are SVG with presentation attributes). Every form
# posts to, and redirects within, this site (browsers apply form-action to the redirects
# after a POST too); the way on to Medallion is a link or a GET redirect, never a form.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    )
)
# Nothing on the portal's own pages needs these; Medallion asks for the camera on its origin.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "camera",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "payment",
        "usb",
    )
)
HSTS = "max-age=31536000"


def add_security_headers(response: Response) -> Response:
    """Set headers every response should carry; HSTS only when the portal is served on https."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    # Status and next-step URLs carry a signed token: never send them to another site.
    # Not no-referrer: over https Flask-WTF's CSRF check needs a same-origin Referer on
    # every POST, and a browser told no-referrer sends none, so every form would fail.
    headers.setdefault("Referrer-Policy", "same-origin")
    if current_app.config["EXTERNAL_URL"].startswith("https://"):
        headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def qr_svg(url: str, title: str) -> Markup:
    """Render `url` as an inline SVG QR code, drawn on the server: no third-party requests."""
    # omitsize gives the SVG a viewBox instead of a fixed size, so CSS scales the whole code
    # rather than cropping it (a cropped code does not scan).
    svg = segno.make(url, error="m").svg_inline(scale=4, border=4, title=title, omitsize=True)
    # The SVG is built by segno from the URL alone (it escapes the title); nothing a person
    # typed reaches it, so it is safe to mark as markup here, in this one place.
    return Markup(svg)


def email_resume_link(user_access_code: str, to: str, first_name: str = "") -> bool:
    """Send the resume and status links to `to`; return False if sending failed.

    The address is used for this one send and goes nowhere else: not stored, not logged.
    """
    email = mail.LinkEmail(
        to=to,
        first_name=first_name,
        resume_url=resume_url(user_access_code),
        status_url=status_url(user_access_code),
    )
    try:
        mail.send_link_email(email, current_app.config, current_app.instance_path)
    except mail.MailError as exc:
        logger.warning("link email for user %s not sent: %s", user_access_code, exc)
        return False
    logger.info("link email for user %s sent", user_access_code)
    return True
