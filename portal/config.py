"""Default settings, and the checks that keep development defaults out of production."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Development-only values. They make `make run` work with no setup, and
# `check_production_settings` refuses to start with any of them outside debug/testing.
DEV_SECRET_KEY = "dev-only-secret-key-change-me"
DEV_AUTHENTICATE_API_KEY = "sandbox-api-key"
DEV_WEBHOOK_SECRET = "dev-only-webhook-secret-0123456789abcdef0123456789abcdef"

# Provider status (lower-cased) -> portal state. Authenticate documents no vocabulary for
# SELF_VERIFICATION_TRY_STATUS (contract §10.4), so this is a starting point that operators
# override with PORTAL_STATUS_MAP; unknown values become "needs_review".
DEFAULT_STATUS_MAP: dict[str, str] = {
    "pending": "in_progress",
    "started": "in_progress",
    "in_progress": "in_progress",
    "initiated": "in_progress",
    "verified": "verified",
    "approved": "verified",
    "passed": "verified",
    "completed": "verified",
    "complete": "verified",
    "success": "verified",
    "failed": "failed",
    "fail": "failed",
    "declined": "failed",
    "rejected": "failed",
    "review": "needs_review",
    "needs_review": "needs_review",
    "under_review": "needs_review",
    "manual_review": "needs_review",
    "attention": "needs_review",
    "abandoned": "expired",
    "expired": "expired",
}


class Defaults:
    """Settings every instance starts from; PORTAL_* environment variables override them."""

    SECRET_KEY = DEV_SECRET_KEY
    # None means "SQLite file in the instance folder"; see portal.__init__.
    DATABASE_URL: str | None = None
    EXTERNAL_URL = "http://127.0.0.1:5000"
    SITE_NAME = "Identity verification"
    SUPPORT_CONTACT = "your account manager"

    AUTHENTICATE_API_URL = "http://127.0.0.1:5001"
    AUTHENTICATE_API_KEY = DEV_AUTHENTICATE_API_KEY
    AUTHENTICATE_VERIFY_URL = "http://127.0.0.1:5001/"
    AUTHENTICATE_WORKFLOW_ID: str | None = None
    AUTHENTICATE_CONNECT_TIMEOUT = 3.05
    AUTHENTICATE_READ_TIMEOUT = 10.0
    # Keys read from GET /user/medallion/{token}/status, whose schema is undocumented.
    AUTHENTICATE_STATUS_FIELD = "status"
    AUTHENTICATE_METHOD_FIELD = "verificationMethod"
    # `flask reconcile` re-checks records undecided for longer than this many seconds.
    RECONCILE_AFTER = 3600

    WEBHOOK_SECRET = DEV_WEBHOOK_SECRET
    # Also accepted while a new WEBHOOK_SECRET is being rolled out at Authenticate.
    WEBHOOK_PREVIOUS_SECRET: str | None = None
    WEBHOOK_MAX_BYTES = 64 * 1024
    # Optional HMAC-SHA256 check over the raw body, for accounts whose webhooks are signed
    # (Authenticate documents no signature). Off while the secret is empty. With a timestamp
    # header named, the signed message is "<timestamp>.<body>"; a non-zero tolerance then
    # refuses deliveries whose timestamp is further than that many seconds from now.
    WEBHOOK_HMAC_SECRET = ""
    WEBHOOK_HMAC_HEADER = "X-Authenticate-Signature"
    WEBHOOK_HMAC_TIMESTAMP_HEADER = ""
    WEBHOOK_HMAC_TOLERANCE = 0
    # Refused webhook requests (4xx/5xx) allowed per client address; accepted ones don't count.
    WEBHOOK_RATE_LIMIT = "600 per minute"
    # Where rate-limit counters live: memory:// (per process) or redis://host:port.
    # No X-RateLimit-* headers: on the webhook path they would tell a right-secret request
    # from a wrong one, which must look exactly like an unknown path.
    RATELIMIT_STORAGE_URL = "memory://"
    STATUS_MAP: dict[str, str] = {}

    STATUS_LINK_MAX_AGE = 30 * 24 * 3600
    # Emailed resume links carry only the UUID; each use fetches a fresh Medallion link.
    RESUME_LINK_MAX_AGE = 7 * 24 * 3600
    # Seconds the next-step page waits before forwarding to Medallion (time to scan its QR).
    NEXT_STEP_REDIRECT_SECONDS = 5
    # Onboarding submits that create an Authenticate user (billed), per client address.
    ONBOARDING_RATE_LIMIT = "20 per hour"
    # Requests for a fresh link email, per status/resume link and per client address.
    EMAIL_RESEND_RATE_LIMIT = "3 per hour"

    # Admin dashboard sessions and login throttling (per account and per client address).
    ADMIN_SESSION_HOURS = 8
    ADMIN_LOGIN_RATE_LIMIT = "5 per minute"

    # "outbox" writes .eml files under instance/outbox (development); "smtp" sends.
    MAIL_BACKEND = "outbox"
    MAIL_OUTBOX_DIR = ""
    MAIL_SENDER = "Identity verification <no-reply@localhost>"
    MAIL_SUBJECT = "Continue your identity verification"
    MAIL_SMTP_HOST = "localhost"
    MAIL_SMTP_PORT = 587
    MAIL_SMTP_SECURITY = "starttls"
    MAIL_SMTP_USERNAME = ""
    MAIL_SMTP_PASSWORD = ""
    MAIL_SMTP_TIMEOUT = 10
    STATUS_POLL_SECONDS = 3
    MIN_AGE = 18
    PHONE_DEFAULT_REGION = "US"
    DEFAULT_COUNTRY = "USA"
    LOG_LEVEL = "INFO"

    # hide_parameters keeps bound values out of exception text, and so out of logs.
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    WTF_CSRF_TIME_LIMIT = 3600 * 4
    MAX_CONTENT_LENGTH = 64 * 1024
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"


REQUIRED_SECRETS = {
    "SECRET_KEY": ("PORTAL_SECRET_KEY", DEV_SECRET_KEY),
    "AUTHENTICATE_API_KEY": ("PORTAL_AUTHENTICATE_API_KEY", DEV_AUTHENTICATE_API_KEY),
    "WEBHOOK_SECRET": ("PORTAL_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
}
MIN_WEBHOOK_SECRET_LENGTH = 32
# Characters that stand in a URL path segment as they are (RFC 3986 "unreserved").
URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Settings that are secrets: read verbatim from the environment, never JSON-decoded (an
# all-digit secret would otherwise become a number).
SECRET_SETTINGS = (
    "SECRET_KEY",
    "AUTHENTICATE_API_KEY",
    "WEBHOOK_SECRET",
    "WEBHOOK_PREVIOUS_SECRET",
    "WEBHOOK_HMAC_SECRET",
    "MAIL_SMTP_PASSWORD",
)


def production_problems(config: Mapping[str, Any]) -> list[str]:
    """Name each secret that is missing, still a development default, too short or unsafe."""
    problems = []
    for key, (env_name, dev_value) in REQUIRED_SECRETS.items():
        value = config.get(key)
        if not value:
            problems.append(f"{env_name} is not set")
        elif value == dev_value:
            problems.append(f"{env_name} is still the development default")
    for key in ("WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET"):
        secret = str(config.get(key) or "")
        if not secret:
            continue
        if len(secret) < MIN_WEBHOOK_SECRET_LENGTH:
            problems.append(f"PORTAL_{key} must be at least {MIN_WEBHOOK_SECRET_LENGTH} characters")
        if not set(secret) <= URL_SAFE:
            problems.append(
                f"PORTAL_{key} may only hold letters, digits and - . _ ~ (it is part of a URL); "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one"
            )
    return problems


def status_map(config: Mapping[str, Any]) -> dict[str, str]:
    """Return the provider-status table: the defaults, overlaid by PORTAL_STATUS_MAP."""
    table = dict(DEFAULT_STATUS_MAP)
    table.update({str(k).lower(): str(v) for k, v in (config.get("STATUS_MAP") or {}).items()})
    return table
