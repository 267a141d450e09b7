"""A Python stand-in for wrk and bench/load.lua, used only when wrk is not installed.

Threads with keep-alive http.client connections send the same request mix as load.lua and
return the same figures. It shares the two cores with the servers and holds the GIL, so it
saturates sooner than wrk: ratios it gives are closer to 1 than the truth.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

STATUS_EVENT = "SELF_VERIFICATION_TRY_STATUS"
OTHER_EVENT = "USER_PROFILE_UPDATED"
STATUSES = ("started", "verified", "failed", "review")
METHODS = ("DOCUMENT", "BIOMETRIC")
EPOCH = datetime(2024, 5, 1, tzinfo=UTC)


def envelope(
    event_id: str, event_type: str, code: str, status: str, method: str, date: str
) -> bytes:
    return (
        f'{{"id":"{event_id}","event":"{event_type}","eventDate":"{date}",'
        f'"order":{{"userAccessCode":"{code}","status":"{status}",'
        f'"verificationMethod":"{method}"}}}}'
    ).encode()


class Mix:
    """One load thread's request generator: the same choices as load.lua's."""

    def __init__(self, mode: str, items: list[list[str]], args: list[str], thread_id: int):
        self.mode, self.items, self.thread_id = mode, items, thread_id
        self.nonce = args[0] if args else "run"
        self.duplicates = int(args[1]) if len(args) > 1 else 0
        self.conditional = bool(args) and args[0] == "conditional"
        self.counter = 0
        self.random = random.Random(thread_id * 7919 + time.time_ns())

    def date(self) -> str:
        offset = timedelta(seconds=self.random.randint(0, 30 * 86400))
        return (EPOCH + offset).strftime("%Y-%m-%dT%H:%M:%SZ")

    def webhook(self) -> bytes:
        roll = self.random.random()
        if roll < 0.20 and self.duplicates:
            k = self.random.randint(1, self.duplicates)
            code = self.items[k - 1][0]
            return envelope(
                f"bench-dup-{k}", STATUS_EVENT, code, "started", "DOCUMENT", "2024-05-01T00:00:00Z"
            )
        self.counter += 1
        event_id = f"{self.nonce}-{self.thread_id}-{self.counter}"
        status = self.random.choice(STATUSES)
        method = self.random.choice(METHODS)
        known = self.random.choice(self.items)[0]
        if roll < 0.25:
            return envelope(event_id, OTHER_EVENT, known, status, method, self.date())
        if roll < 0.30:
            orphan = str(uuid.UUID(int=self.random.getrandbits(128), version=4))
            return envelope(event_id, STATUS_EVENT, orphan, status, method, self.date())
        return envelope(event_id, STATUS_EVENT, known, status, method, self.date())

    def next(self, path: str) -> tuple[str, str, bytes | None, dict[str, str]]:
        if self.mode == "webhook":
            return "POST", path, self.webhook(), {"Content-Type": "application/json"}
        self.counter += 1
        token, etag = (self.items[self.counter % len(self.items)] + [""])[:2]
        headers = {"Accept": "application/json"}
        if self.conditional:
            headers["If-None-Match"] = f'"{etag}"'
        return "GET", f"{path.rstrip('/')}/status/{token}.json", None, headers


def run(
    url: str, mode: str, data_file: str, args: list[str], seconds: float, connections: int
) -> dict[str, float]:
    """Drive `url` for `seconds` with `connections` threads; return load.lua's figures."""
    with open(data_file) as f:
        items = [line.split() for line in f if line.strip()]
    target = urlsplit(url)
    deadline = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(thread_id: int) -> None:
        mix = Mix(mode, items, args, thread_id)
        local: Counter[str] = Counter()
        local_latencies = []
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        while time.monotonic() < deadline:
            method, path, body, headers = mix.next(target.path or "/")
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                local["errors_read"] += 1
                conn.close()
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
                continue
            local_latencies.append(time.perf_counter() - started)
            local[f"status_{response.status}"] += 1
            if response.status > 399:
                local["errors_status"] += 1
            marker = payload.find(b'"outcome":"')
            if marker >= 0:
                outcome = payload[marker + 11 :].split(b'"', 1)[0].decode()
                local[f"outcome_{outcome}"] += 1
        conn.close()
        with lock:
            counts.update(local)
            latencies.extend(local_latencies)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i + 1,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] if latencies else 0.0

    figures: dict[str, float] = {
        "requests": len(latencies),
        "seconds": elapsed,
        "errors_socket": counts.pop("errors_read", 0),
        "errors_status": counts.pop("errors_status", 0),
        "p50_ms": percentile(0.50) * 1000,
        "p99_ms": percentile(0.99) * 1000,
    }
    figures.update(counts)
    return figures
