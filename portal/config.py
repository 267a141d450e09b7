"""Default settings, and the checks that keep development defaults out of production."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many

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
    # `flask purge` deletes records, and their events, idle for longer than this many days
    # (and orphan events received before then). Keep it above the status-link age.
    RETENTION_DAYS = 365

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
    # The same, counted across all addresses together: a script spread over many addresses
    # still cannot create more billable users than this. Size it above the real peak.
    ONBOARDING_GLOBAL_RATE_LIMIT = "300 per hour"
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
    # "json": one JSON object per line (production); "text": readable lines (`make run`).
    LOG_FORMAT = "json"
    # Bearer token for GET /metrics; unset, /metrics is a 404 like any unknown path.
    METRICS_TOKEN = ""
    # Read by the gunicorn master from the environment only: when set, it also serves the
    # metrics on this port (no token) at METRICS_HOST, loopback unless opened on purpose.
    METRICS_PORT = 0
    METRICS_HOST = "127.0.0.1"
    # Reverse proxies in front of the portal that set X-Forwarded-For and -Proto. Only that
    # many hops are believed (werkzeug ProxyFix); 0 believes none, for a portal facing
    # clients directly. The client address decides per-address rate limits.
    TRUSTED_PROXIES = 0
    # Seconds to open a PostgreSQL connection; a database that is down then fails requests
    # (503) and /readyz quickly instead of holding workers.
    DATABASE_CONNECT_TIMEOUT = 5
    # Largest request body; then, for multipart posts, bytes per field and number of fields
    # (werkzeug reads a url-encoded body whole, so the body limit bounds it). The portal's
    # forms are a few hundred bytes; anything larger gets a 413 page.
    MAX_CONTENT_LENGTH = 64 * 1024
    MAX_FORM_MEMORY_SIZE = 8 * 1024
    MAX_FORM_PARTS = 50

    # hide_parameters keeps bound values out of exception text, and so out of logs.
    # pool_pre_ping costs a round trip per request, and buys that a database restart costs
    # no one an error page: without it the first statement on each stale pooled connection
    # fails (a submit, an admin page). Webhooks and status polls also retry once on a fresh
    # connection (store.connections), for a restart between the ping and the statement.
    SQLALCHEMY_ENGINE_OPTIONS: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    WTF_CSRF_TIME_LIMIT = 3600 * 4
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"


REQUIRED_SECRETS = {
    "SECRET_KEY": ("PORTAL_SECRET_KEY", DEV_SECRET_KEY),
    "AUTHENTICATE_API_KEY": ("PORTAL_AUTHENTICATE_API_KEY", DEV_AUTHENTICATE_API_KEY),
    "WEBHOOK_SECRET": ("PORTAL_WEBHOOK_SECRET", DEV_WEBHOOK_SECRET),
}
# Characters, for every secret the portal makes itself: secrets.token_urlsafe(32) gives 43.
MIN_SECRET_LENGTH = 32
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
# More trusted hops than this is almost always a miscount (each hop is a proxy you run).
MAX_LIKELY_PROXIES = 3
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
    "METRICS_TOKEN",
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
    secret_key = str(config.get("SECRET_KEY") or "")
    if secret_key not in ("", DEV_SECRET_KEY) and len(secret_key) < MIN_SECRET_LENGTH:
        # It signs sessions, CSRF tokens and status links: a short one can be guessed offline.
        problems.append(
            f"PORTAL_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters; "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))' makes one"
        )
    for key in ("WEBHOOK_SECRET", "WEBHOOK_PREVIOUS_SECRET"):
        secret = str(config.get(key) or "")
        if not secret:
            continue
        if len(secret) < MIN_SECRET_LENGTH:
            problems.append(f"PORTAL_{key} must be at least {MIN_SECRET_LENGTH} characters")
        if not set(secret) <= URL_SAFE:
            problems.append(
                f"PORTAL_{key} may only hold letters, digits and - . _ ~ (it is part of a URL); "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))' makes one"
            )
    token = str(config.get("METRICS_TOKEN") or "")
    if token and len(token) < MIN_SECRET_LENGTH:
        problems.append(f"PORTAL_METRICS_TOKEN must be at least {MIN_SECRET_LENGTH} characters")
    return problems


def trusted_proxies(config: Mapping[str, Any]) -> int:
    """Return PORTAL_TRUSTED_PROXIES as a count; raises ValueError unless a whole number >= 0."""
    value = config.get("TRUSTED_PROXIES", 0)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("PORTAL_TRUSTED_PROXIES must be a whole number of proxies, 0 or more")
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ValueError("PORTAL_TRUSTED_PROXIES must be a whole number of proxies, 0 or more")
    return count


def deployment_problems(config: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) about running `config` in production, for check-config.

    Errors are settings that leak data, lose it or break the service across instances;
    warnings are choices that are only right in some deployments.
    """
    errors = production_problems(config)
    warnings: list[str] = []
    database = str(config.get("SQLALCHEMY_DATABASE_URI") or config.get("DATABASE_URL") or "")
    if not database.startswith("postgresql"):
        errors.append(
            "PORTAL_DATABASE_URL is not PostgreSQL: a SQLite file cannot be shared by several "
            "instances and is not backed up with the database"
        )
    for key in ("EXTERNAL_URL", "AUTHENTICATE_API_URL", "AUTHENTICATE_VERIFY_URL"):
        url = urlsplit(str(config.get(key) or ""))
        if url.hostname in LOCAL_HOSTS and key != "EXTERNAL_URL":
            errors.append(f"PORTAL_{key} points at this machine (the development sandbox?)")
        elif url.scheme != "https" or not url.hostname:
            errors.append(f"PORTAL_{key} must be an https:// URL")
    if config.get("MAIL_BACKEND") != "smtp":
        errors.append(
            "PORTAL_MAIL_BACKEND is not smtp: emails would be written to files, holding "
            "people's addresses, and never sent"
        )
    errors.extend(_limit_problems(config))
    try:
        proxies = trusted_proxies(config)
    except ValueError as exc:
        errors.append(str(exc))
    else:
        if proxies == 0:
            warnings.append(
                "PORTAL_TRUSTED_PROXIES is 0: behind a reverse proxy every client has the "
                "proxy's address, so per-address rate limits apply to everyone together"
            )
        elif proxies > MAX_LIKELY_PROXIES:
            warnings.append(
                f"PORTAL_TRUSTED_PROXIES is {proxies}: count only proxies you run, or clients "
                "can choose their own address for rate limits"
            )
    if str(config.get("RATELIMIT_STORAGE_URL", "")).startswith("memory://"):
        warnings.append(
            "PORTAL_RATELIMIT_STORAGE_URL is memory://: each worker process of each instance "
            "counts alone, so limits multiply by workers x instances; use redis://"
        )
    relay = config.get("MAIL_SMTP_HOST")
    if config.get("MAIL_SMTP_SECURITY") == "none" and relay not in LOCAL_HOSTS:
        warnings.append(f"PORTAL_MAIL_SMTP_SECURITY is none for {relay}, another machine")
    return errors, warnings


def _limit_problems(config: Mapping[str, Any]) -> list[str]:
    """Name each rate limit that Flask-Limiter could not parse (it would fail per request)."""
    problems = []
    for key in sorted(k for k in config if k.endswith("_RATE_LIMIT")):
        try:
            parse_many(str(config[key]))
        except ValueError:
            problems.append(f"PORTAL_{key} is not a rate limit like '20 per hour'")
    return problems


def status_map(config: Mapping[str, Any]) -> dict[str, str]:
    """Return the provider-status table: the defaults, overlaid by PORTAL_STATUS_MAP."""
    table = dict(DEFAULT_STATUS_MAP)
    table.update({str(k).lower(): str(v) for k, v in (config.get("STATUS_MAP") or {}).items()})
    return table
