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
    STATUS_MAP: dict[str, str] = {}

    STATUS_LINK_MAX_AGE = 30 * 24 * 3600
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


def production_problems(config: Mapping[str, Any]) -> list[str]:
    """Name each secret that is missing, still a development default, or too short."""
    problems = []
    for key, (env_name, dev_value) in REQUIRED_SECRETS.items():
        value = config.get(key)
        if not value:
            problems.append(f"{env_name} is not set")
        elif value == dev_value:
            problems.append(f"{env_name} is still the development default")
    secret = config.get("WEBHOOK_SECRET") or ""
    if secret and len(secret) < MIN_WEBHOOK_SECRET_LENGTH:
        problems.append(
            f"PORTAL_WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET_LENGTH} characters"
        )
    return problems


def status_map(config: Mapping[str, Any]) -> dict[str, str]:
    """Return the provider-status table: the defaults, overlaid by PORTAL_STATUS_MAP."""
    table = dict(DEFAULT_STATUS_MAP)
    table.update({str(k).lower(): str(v) for k, v in (config.get("STATUS_MAP") or {}).items()})
    return table
