"""Sandbox settings: defaults, SANDBOX_* environment overrides and type coercion."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from flask import Flask

# The raw status and verification-method strings Authenticate sends are undocumented
# (contract §10.4), so every one of them is a setting rather than a constant.
DEFAULTS: dict[str, Any] = {
    "API_KEY": "sandbox-api-key",
    # One URL, or several separated by spaces or commas: deliveries then take them in turn,
    # as a load balancer would, and a failed attempt is retried on the next one.
    "WEBHOOK_URL": (),
    "STATUS_STARTED": "started",
    "STATUS_VERIFIED": "verified",
    "STATUS_FAILED": "failed",
    "STATUS_REVIEW": "review",
    "STATUS_ABANDONED": "abandoned",
    "VERIFICATION_METHOD": "governmentId",
    "TOKEN_TTL": 86400,
    "RESPONSE_DELAY": 0.0,
    # Seconds between an event happening and its first delivery, as a real provider
    # processes asynchronously; `make run` sets it so the status page visibly changes.
    "WEBHOOK_DELAY": 0.0,
    "WEBHOOK_MAX_ATTEMPTS": 6,
    # Optional HMAC signing of deliveries (off when the secret is empty).
    "WEBHOOK_HMAC_SECRET": "",
    "WEBHOOK_HMAC_HEADER": "X-Authenticate-Signature",
    "WEBHOOK_HMAC_TIMESTAMP_HEADER": "",
    "WEBHOOK_BACKOFF": 0.5,
    "WEBHOOK_TIMEOUT": 5.0,
    "WEBHOOK_DUPLICATES": False,
    "WEBHOOK_REORDER": False,
}

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def to_bool(value: object) -> bool:
    """Read a flag given as a bool, a number or a word such as "yes"/"off"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    word = str(value).strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def is_http_url(value: object) -> TypeGuard[str]:
    """Tell whether value is an absolute http(s) URL with a host."""
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _url_list(value: object) -> tuple[str, ...]:
    """Return the webhook URLs (empty when unset), or raise when one is not http(s).

    A string is split on spaces and commas; a list (SANDBOX_WEBHOOK_URL given as JSON)
    is taken as it is.
    """
    if value is None:
        return ()
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError("SANDBOX_WEBHOOK_URL must be http(s) URLs")
    for item in items:
        if not is_http_url(item):
            raise ValueError("SANDBOX_WEBHOOK_URL must be http(s) URLs")
    return tuple(items)


def _non_negative(kind: Callable[[Any], float]) -> Callable[[Any], Any]:
    """Build a coercer that converts with kind and refuses negative numbers."""

    def coerce(value: Any) -> Any:
        number = kind(value)
        if number < 0:
            raise ValueError(f"must not be negative: {value!r}")
        return number

    return coerce


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "API_KEY": str,
    "WEBHOOK_URL": _url_list,
    "STATUS_STARTED": str,
    "STATUS_VERIFIED": str,
    "STATUS_FAILED": str,
    "STATUS_REVIEW": str,
    "STATUS_ABANDONED": str,
    "VERIFICATION_METHOD": str,
    "TOKEN_TTL": _non_negative(int),
    "RESPONSE_DELAY": _non_negative(float),
    "WEBHOOK_DELAY": _non_negative(float),
    "WEBHOOK_MAX_ATTEMPTS": _non_negative(int),
    "WEBHOOK_HMAC_SECRET": str,
    "WEBHOOK_HMAC_HEADER": str,
    "WEBHOOK_HMAC_TIMESTAMP_HEADER": str,
    "WEBHOOK_BACKOFF": _non_negative(float),
    "WEBHOOK_TIMEOUT": _non_negative(float),
    "WEBHOOK_DUPLICATES": to_bool,
    "WEBHOOK_REORDER": to_bool,
}


def load_config(app: Flask, config: Mapping[str, Any] | None) -> None:
    """Apply defaults, then SANDBOX_* variables, then config, and coerce every value's type."""
    app.config.from_mapping(DEFAULTS)
    # from_prefixed_env json-decodes values, so SANDBOX_API_KEY=123 arrives as an int and
    # SANDBOX_WEBHOOK_REORDER=yes as a str; the coercers below make both forms work.
    app.config.from_prefixed_env("SANDBOX")
    if config is not None:
        app.config.from_mapping(config)
    for key, coerce in _COERCERS.items():
        try:
            app.config[key] = coerce(app.config[key])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"invalid sandbox setting {key}: {exc}") from None
    app.config["WEBHOOK_MAX_ATTEMPTS"] = max(1, app.config["WEBHOOK_MAX_ATTEMPTS"])
