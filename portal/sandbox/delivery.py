"""Webhook envelopes and the background worker that POSTs them with retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import current_app

logger = logging.getLogger(__name__)

EVENT_TRY_STATUS = "SELF_VERIFICATION_TRY_STATUS"
LOG_LIMIT = 1000


def format_event_date(when: datetime) -> str:
    """Format a time as contract §10.3 does: UTC, millisecond precision, trailing "Z"."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_envelope(
    user_access_code: str, status: str, method: str, when: datetime | None = None
) -> dict[str, Any]:
    """Build a SELF_VERIFICATION_TRY_STATUS delivery with a fresh uuid4 id."""
    return {
        "id": str(uuid.uuid4()),
        "event": EVENT_TRY_STATUS,
        "eventDate": format_event_date(when or datetime.now(UTC)),
        "order": {
            "userAccessCode": user_access_code,
            "status": status,
            "verificationMethod": method,
        },
    }


@dataclass
class DeliveryRecord:
    """One delivery (a duplicate gets its own record); holds UUIDs and outcomes only."""

    event_id: str
    event: str
    user_access_code: str
    status: str
    duplicate: bool
    state: str = "queued"
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    # host:port of the last attempt's URL (never the path, which holds the webhook secret).
    target: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Return the record with camelCase keys, matching the API's naming."""
        return {
            "eventId": self.event_id,
            "event": self.event,
            "userAccessCode": self.user_access_code,
            "status": self.status,
            "duplicate": self.duplicate,
            "state": self.state,
            "attempts": self.attempts,
            "httpStatus": self.http_status,
            "error": self.error,
            "target": self.target,
        }


@dataclass(frozen=True)
class Signing:
    """HMAC-SHA256 signing of webhook bodies; upstream documents none (contract §10.5).

    The signature covers the raw body, or "<timestamp>.<body>" when a timestamp header is
    named, and is sent as "sha256=<hex>".
    """

    secret: str
    signature_header: str
    timestamp_header: str = ""

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """Return the headers that sign `body` at `timestamp`."""
        message = f"{timestamp}.".encode() + body if self.timestamp_header else body
        digest = hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()
        headers = {self.signature_header: f"sha256={digest}"}
        if self.timestamp_header:
            headers[self.timestamp_header] = str(timestamp)
        return headers


class Deliverer:
    """Send envelopes one at a time, in queue order, from a lazily started daemon thread.

    With several webhook URLs, attempts take them in turn, as a round-robin load balancer
    does, so a failed attempt is retried on the next URL.
    """

    def __init__(
        self,
        url_source: Callable[[], Sequence[str]],
        *,
        max_attempts: int,
        backoff: float,
        timeout: float,
        delay: float = 0.0,
        signing: Signing | None = None,
    ) -> None:
        self._url_source = url_source
        self._delay = delay
        self._signing = signing
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._timeout = (timeout, timeout)
        self._queue: queue.Queue[tuple[dict[str, Any], DeliveryRecord] | None] = queue.Queue()
        self._log: deque[DeliveryRecord] = deque(maxlen=LOG_LIMIT)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Only the worker thread reads or moves it.
        self._turn = 0

    def enqueue(self, envelope: dict[str, Any], copies: int = 1) -> None:
        """Queue the envelope; extra copies re-send it unchanged, same id included."""
        for copy in range(copies):
            record = DeliveryRecord(
                event_id=envelope["id"],
                event=envelope["event"],
                user_access_code=envelope["order"]["userAccessCode"],
                status=envelope["order"]["status"],
                duplicate=copy > 0,
            )
            with self._lock:
                self._log.append(record)
                self._start_locked()
            self._queue.put((envelope, record))

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the delivery log, oldest first, as plain dicts."""
        with self._lock:
            return [record.as_json() for record in self._log]

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the worker, abandoning queued deliveries and cutting short any backoff wait."""
        self._stopping.set()
        self._queue.put(None)
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _start_locked(self) -> None:
        """Start the worker on first use so idle apps (and most tests) own no thread."""
        if self._thread is None and not self._stopping.is_set():
            self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Deliver queued envelopes until stop() is called."""
        while not self._stopping.is_set():
            item = self._queue.get()
            if item is None:
                break
            envelope, record = item
            try:
                self._deliver(envelope, record)
            except Exception:  # a broken delivery must never kill the worker
                logger.exception("webhook %s: unexpected delivery error", record.event_id)
                self._update(record, state="failed", error="internal error")

    def _deliver(self, envelope: dict[str, Any], record: DeliveryRecord) -> None:
        """POST one envelope, retrying with doubling backoff on any non-2xx or network error."""
        if self._delay and self._stopping.wait(self._delay):
            return
        for attempt in range(1, self._max_attempts + 1):
            url = self._next_url()
            if url is None:
                self._update(record, state="skipped", error="no webhook URL configured")
                return
            self._update(record, state="sending", attempts=attempt, target=urlsplit(url).netloc)
            status, error = self._post(url, envelope)
            self._update(record, http_status=status, error=error)
            if status is not None and 200 <= status < 300:
                self._update(record, state="delivered")
                logger.info("webhook %s delivered (attempt %d)", record.event_id, attempt)
                return
            logger.warning(
                "webhook %s attempt %d failed: %s", record.event_id, attempt, error or status
            )
            if attempt < self._max_attempts:
                if self._stopping.wait(self._backoff * 2 ** (attempt - 1)):
                    break
        self._update(record, state="failed")

    def _next_url(self) -> str | None:
        """Return the URL whose turn it is, or None when none is configured."""
        urls = self._url_source()
        if not urls:
            return None
        url = urls[self._turn % len(urls)]
        self._turn += 1
        return url

    def _post(self, url: str, envelope: dict[str, Any]) -> tuple[int | None, str | None]:
        """Send the envelope once; return (HTTP status, None) or (None, error class name)."""
        body = json.dumps(envelope, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if self._signing is not None:
            headers.update(self._signing.headers(body, int(time.time())))
        try:
            # Redirects are not followed: a 3xx counts as a failed delivery, as any non-2xx.
            response = requests.post(
                url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            return None, type(exc).__name__
        with response:
            return response.status_code, None

    def _update(self, record: DeliveryRecord, **changes: Any) -> None:
        """Change a log record under the lock so snapshots never see half an update."""
        with self._lock:
            for name, value in changes.items():
                setattr(record, name, value)


def get_deliverer() -> Deliverer:
    """Return the current sandbox app's webhook deliverer."""
    deliverer: Deliverer = current_app.extensions["sandbox.deliverer"]
    return deliverer
