"""Counts of refused webhook deliveries (4xx/5xx) for the admin health panel.

They live in the rate-limit storage Flask-Limiter already uses, not in the database: a refused
delivery must leave the database exactly as it was, and a 503 is answered precisely when the
database is down, so only a counter outside it can see those. Each status code has one
counter per UTC hour that expires after COUNTER_HOURS; the panel sums the last WINDOW_HOURS.
With memory:// storage the counts are this server process's own; with Redis they are shared
by every process of every instance.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask import current_app
from limits.errors import StorageError

from portal.extensions import limiter

logger = logging.getLogger(__name__)

# The codes the webhook endpoint answers with; anything else is counted as "4xx" or "5xx".
CODES = (400, 401, 404, 405, 413, 415, 429, 500, 503)
WINDOW_HOURS = 24
# An hour's counter outlives the window it is summed in by an hour.
COUNTER_HOURS = WINDOW_HOURS + 1
# Flask-Limiter's own keys start with "LIMITER/": these never collide with them.
KEY = "portal/webhook-refused/{code}/{hour}"


@dataclass(frozen=True)
class RefusalCounts:
    """Refused deliveries over the window, per status code and per class."""

    by_code: dict[str, int]
    shared: bool

    def total(self, status_class: str) -> int:
        """Return the sum for "4xx" or "5xx"."""
        return sum(n for code, n in self.by_code.items() if code[0] == status_class[0])


def count_refusal(status_code: int, now: float | None = None) -> None:
    """Add one refused delivery to its code's counter for the current hour.

    Fails open: a storage that is down costs the count, never the answer to the sender.
    """
    key = _key(_bucket(status_code), _hour(now))
    storage = limiter.storage
    try:
        storage.incr(key, COUNTER_HOURS * 3600)
    except (StorageError, *_exceptions(storage)) as exc:
        logger.warning("webhook refusal %d not counted: %r", status_code, exc)


def refusal_counts(now: float | None = None) -> RefusalCounts | None:
    """Return refused deliveries in the current UTC hour and the WINDOW_HOURS - 1 before it.

    Returns None when the storage cannot be read (Redis down): the panel says so.
    """
    current = _hour(now)
    hours = range(current - WINDOW_HOURS + 1, current + 1)
    storage = limiter.storage
    by_code = {}
    try:
        for code in (*(str(c) for c in CODES), "4xx", "5xx"):
            total = sum(storage.get(_key(code, hour)) for hour in hours)
            if total:
                by_code[code] = total
    except (StorageError, *_exceptions(storage)) as exc:
        logger.warning("webhook refusal counts unreadable: %r", exc)
        return None
    return RefusalCounts(by_code, shared=not storage_is_per_process())


def storage_is_per_process() -> bool:
    """Tell whether counters live in this process's memory (the memory:// default)."""
    return str(current_app.config["RATELIMIT_STORAGE_URI"]).startswith("memory://")


def _bucket(status_code: int) -> str:
    if status_code in CODES:
        return str(status_code)
    return "5xx" if status_code >= 500 else "4xx"


def _hour(now: float | None) -> int:
    return int((time.time() if now is None else now) // 3600)


def _key(code: str, hour: int) -> str:
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX") or ""
    return prefix + KEY.format(code=code, hour=hour)


def _exceptions(storage: object) -> tuple[type[Exception], ...]:
    found = getattr(storage, "base_exceptions", ())
    return found if isinstance(found, tuple) else (found,)
