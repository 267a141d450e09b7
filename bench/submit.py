"""Speed at the front door: the onboarding submit over a slow upstream. `python bench/submit.py`.

`make bench` runs it from bench/run.py. The sandbox (portal/sandbox) answers every API call
after SANDBOX_RESPONSE_DELAY seconds (default 0.15), under gunicorn with threads to spare.
The portal, and a bare Flask app that makes the same upstream call (bench/bare_submit.py),
are served by gunicorn with the production settings of portal/gunicorn_conf.py (so
GUNICORN_WORKERS and GUNICORN_THREADS change both). The portal's database is PostgreSQL
(a bench_submit_<pid> database at BENCH_POSTGRES_URL, dropped at the end) when reachable,
else SQLite. Its rate limits are raised for the run so that none answers 429.

Simulated users are Python threads; each journey is a new browser on a new connection:
GET / (CSRF token, session cookie, submit key), then POST / with synthetic details (names
from a made-up list, example.com addresses, 555-01xx phone numbers, which are fictional).
The submit makes one upstream call, POST /user/create, and answers 303 to the next step,
which is not followed (its page makes the next upstream call, for the Medallion link).

1. `workers × threads` users for BENCH_SECONDS (after BENCH_WARMUP): submit latency of the
   portal minus that of bare Flask, at p50 and p99, is the portal's overhead. Before it, a
   run with one user per worker gives the overhead when CPU is not short (a `#` line).
2. BENCH_SUBMIT_CROWD (default 4) times as many users: every one must be served, and the
   portal's submits per second are compared with the ideal `workers × threads / upstream`,
   where upstream is bare Flask's mean submit latency in run 1.
3. A fresh portal serves BENCH_SUBMIT_REQUESTS (default 10,000) requests of a realistic mix:
   per journey a form, a submit, the status page, six status polls (with If-None-Match, as
   the page's script sends) and a form left unsent. Then the resident memory (VmRSS) of its
   largest worker is read from /proc.

stdout ends with these lines (progress goes to stderr, notes to `#` lines):

    submit_throughput ratio=X.XX portal_rps=... ideal_rps=... workers=... threads=...
        upstream_ms=...   (one line)
    submit_overhead_p50_ms=...
    submit_overhead_p99_ms=...
    worker_rss_mb=...

Aims (issue 6): overhead under 5 ms at p50, ratio at least 0.8, under 80 MB per worker.
Exits 1 when any answer was not the one expected (200 for pages, 303 for submits, 200 or
304 for polls), on any socket error, or when a server logged errors.
"""

from __future__ import annotations

import http.client
import logging
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from flask_migrate import upgrade  # noqa: E402

from bench import run  # noqa: E402
from bench.wsgi_portal import build_app  # noqa: E402
from portal import gunicorn_conf  # noqa: E402
from portal.config import Defaults  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.migrating import init_migrations  # noqa: E402

DELAY = float(os.environ.get("SANDBOX_RESPONSE_DELAY", "0.15"))
CROWD = int(os.environ.get("BENCH_SUBMIT_CROWD", "4"))
MIX_REQUESTS = int(os.environ.get("BENCH_SUBMIT_REQUESTS", "10000"))
POLLS = 6  # status polls per journey in the memory mix
TIMEOUT = 30  # seconds a simulated browser waits for an answer

SERVING = ["-c", str(ROOT / "portal" / "gunicorn_conf.py")]
HIDDEN = re.compile(r'<input[^>]*name="(csrf_token|submit_key)"[^>]*value="([^"]*)"')
NEXT_STEP = re.compile(r"/status/([^/?#]+)/continue")
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}

# Made up: no real person's details are sent anywhere, even to the local sandbox.
GIVEN_NAMES = ("Avery", "Blake", "Casey", "Devon", "Emery", "Finley", "Harper", "Jordan")
FAMILY_NAMES = ("Quillfeather", "Brambleton", "Ashcombe", "Thistlewood", "Marlowby", "Fenwright")


@dataclass
class Tally:
    """What the simulated users saw in one run; latencies are in seconds, by request kind."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    submits_in_time: int = 0  # submits answered before the run's deadline
    socket_errors: int = 0
    seconds: float = 0.0
    cpu_ms: float = 0.0  # server CPU per form+submit (measure() fills it in)

    def add(self, kind: str, status: int, seconds: float, *expected: int) -> bool:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[f"{kind} {status}"] += 1
        if status not in expected:
            self.problems[f"{kind} answered {status}"] += 1
        return status in expected

    def merge(self, other: Tally) -> None:
        for kind, values in other.latencies.items():
            self.latencies.setdefault(kind, []).extend(values)
        self.statuses.update(other.statuses)
        self.problems.update(other.problems)
        self.submits_in_time += other.submits_in_time
        self.socket_errors += other.socket_errors

    @property
    def requests(self) -> int:
        """Requests answered, plus those that failed on the socket (they count too)."""
        return sum(len(values) for values in self.latencies.values()) + self.socket_errors

    def percentile_ms(self, kind: str, share: float) -> float:
        values = sorted(self.latencies.get(kind, []))
        return values[min(len(values) - 1, int(len(values) * share))] * 1000 if values else 0.0

    def mean_ms(self, kind: str) -> float:
        values = self.latencies.get(kind, [])
        return sum(values) * 1000 / len(values) if values else 0.0

    @property
    def submit_rps(self) -> float:
        return self.submits_in_time / self.seconds if self.seconds else 0.0


class Visitor:
    """One simulated browser: its own connection and cookies."""

    def __init__(self, base_url: str) -> None:
        target = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(target.hostname, target.port, timeout=TIMEOUT)
        self.cookies: dict[str, str] = {}

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, bytes, float]:
        """Send one request; return status, headers, body and seconds to the last byte."""
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        took = time.perf_counter() - started
        for line in response.headers.get_all("Set-Cookie") or []:
            name, _, value = line.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        return response.status, response.headers, payload, took


def person(rng: random.Random) -> dict[str, str]:
    """Return a synthetic, valid onboarding form: an adult with made-up details."""
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(50 * 365))
    return {
        "first_name": rng.choice(GIVEN_NAMES),
        "middle_name": rng.choice(("", "", *GIVEN_NAMES)),
        "last_name": rng.choice(FAMILY_NAMES),
        "birth_date": born.isoformat(),
        "email": f"bench.{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}@example.com",
        "phone": f"+1 202 555 01{rng.randrange(100):02d}",
        "country": "USA",
        "consent": "y",
        "delivery": "now",
    }


def submit_journey(
    visitor: Visitor, rng: random.Random, tally: Tally, deadline: float
) -> str | None:
    """Load the form and post it; return the status token from the next-step URL."""
    status, _, page, took = visitor.send("GET", "/")
    if not tally.add("form", status, took, 200):
        return None
    hidden = dict(HIDDEN.findall(page.decode()))
    body = urlencode({**hidden, **person(rng)}).encode()
    status, headers, _, took = visitor.send("POST", "/", body, FORM_TYPE)
    if not tally.add("submit", status, took, 303):
        return None
    if time.monotonic() <= deadline:
        tally.submits_in_time += 1
    match = NEXT_STEP.search(headers.get("Location", ""))
    if match is None:
        tally.problems["submit redirected elsewhere"] += 1
        return None
    return match.group(1)


def mix_journey(base_url: str, rng: random.Random, tally: Tally, deadline: float) -> None:
    """One person onboarding and watching the status page, and one who leaves the form."""
    visitor = Visitor(base_url)
    try:
        token = submit_journey(visitor, rng, tally, deadline)
        if token is None:
            return
        status, _, _, took = visitor.send("GET", f"/status/{token}")
        tally.add("status page", status, took, 200)
        etag = ""
        for _ in range(POLLS):
            headers = {"Accept": "application/json"}
            if etag:
                headers["If-None-Match"] = etag
            status, answer, _, took = visitor.send("GET", f"/status/{token}.json", None, headers)
            tally.add("status poll", status, took, 200, 304)
            etag = answer.get("ETag", etag)
    finally:
        visitor.conn.close()
    leaver = Visitor(base_url)
    try:
        status, _, _, took = leaver.send("GET", "/")
        tally.add("form", status, took, 200)
    finally:
        leaver.conn.close()


def form_and_submit(base_url: str, rng: random.Random, tally: Tally, deadline: float) -> None:
    visitor = Visitor(base_url)
    try:
        submit_journey(visitor, rng, tally, deadline)
    finally:
        visitor.conn.close()


Journey = Callable[[str, random.Random, Tally, float], None]


def drive(
    base_url: str, users: int, journey: Journey, seconds: float, max_requests: int = 0
) -> Tally:
    """Run `users` threads of journeys for `seconds`, or until `max_requests` were sent."""
    total = Tally()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + seconds

    def user(number: int) -> None:
        rng = random.Random(number * 7919 + time.time_ns())
        mine = Tally()
        while time.monotonic() < deadline:
            if max_requests and total.requests + mine.requests >= max_requests:
                break
            try:
                journey(base_url, rng, mine, deadline)
            except (OSError, http.client.HTTPException) as exc:
                mine.problems[f"socket error {type(exc).__name__}"] += 1
                mine.socket_errors += 1
            # The budget counts every user's requests: share them as they are made.
            with lock:
                total.merge(mine)
            mine = Tally()

    threads = [threading.Thread(target=user, args=(n,)) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total.seconds = min(time.monotonic(), deadline) - started
    return total


def measure(label: str, server: run.Server, log: Path, users: int, seconds: float) -> Tally:
    """Warm up, then drive form-and-submit journeys; report the figures to stderr."""
    if run.WARMUP:
        drive(server.url, users, form_and_submit, run.WARMUP)
    cpu = server.cpu_seconds()
    tally = drive(server.url, users, form_and_submit, seconds)
    submits = len(tally.latencies.get("submit", []))
    tally.cpu_ms = (server.cpu_seconds() - cpu) * 1000 / max(1, submits)
    say(
        f"  {label}, {users} users: {tally.submit_rps:.1f} submits/s; submit "
        f"p50 {tally.percentile_ms('submit', 0.5):.1f} ms, "
        f"p99 {tally.percentile_ms('submit', 0.99):.1f} ms, "
        f"mean {tally.mean_ms('submit'):.1f} ms; "
        f"form p50 {tally.percentile_ms('form', 0.5):.1f} ms; "
        f"server CPU {tally.cpu_ms:.1f} ms per form+submit"
    )
    report_problems(label, tally)
    if tally.socket_errors:
        say(f"  {label} log:\n{run.tail(log)}")
    return tally


def report_problems(label: str, tally: Tally) -> None:
    for problem, count in sorted(tally.problems.items()):
        say(f"  PROBLEM {label}: {count} × {problem}")


def worker_rss_mb(server: run.Server) -> list[float]:
    """Return the resident memory (VmRSS, MB) of each of the gunicorn master's workers."""
    sizes = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue  # gone meanwhile
        if int(fields.get("PPid", "0")) == server.pid and "VmRSS" in fields:
            sizes.append(int(fields["VmRSS"].split()[0]) / 1024)
    return sorted(sizes, reverse=True)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def settings() -> dict[str, str]:
    """Return the servers' environment: real secrets, every rate limit out of the way."""
    sandbox_key = "bench-" + secrets.token_hex(16)
    env = dict(
        os.environ,
        PORTAL_SECRET_KEY=secrets.token_urlsafe(48),
        PORTAL_AUTHENTICATE_API_KEY=sandbox_key,
        PORTAL_WEBHOOK_SECRET=secrets.token_urlsafe(32),
        SANDBOX_API_KEY=sandbox_key,
        SANDBOX_RESPONSE_DELAY=str(DELAY),
        SANDBOX_WEBHOOK_URL="",  # no deliveries: the submit is measured, not the webhooks
        BENCH_SANDBOX_API_KEY=sandbox_key,
    )
    for name in dir(Defaults):
        if name.endswith("RATE_LIMIT"):
            env[f"PORTAL_{name}"] = "1000000 per minute"
    return env


@contextmanager
def database(folder: Path) -> Iterator[tuple[str, str]]:
    """Yield (kind, URL) of a migrated database: PostgreSQL when reachable, else SQLite."""
    admin = run.postgres_admin()
    if admin is None:
        url = f"sqlite:///{folder / 'submit.sqlite3'}"
        migrate(url)
        yield "sqlite", url
        return
    with admin, run.postgres_database(admin, "bench_submit") as url:
        migrate(url)
        yield "postgres", url


def migrate(url: str) -> None:
    app = build_app(url)
    init_migrations(app)
    with app.app_context():
        upgrade()
        db.engine.dispose()


@dataclass
class Results:
    """The measures, and the lines they end as; `bare` and `portal` are at workers × threads."""

    kind: str
    workers: int
    threads: int
    bare_quiet: Tally
    quiet: Tally
    bare: Tally
    portal: Tally
    bare_crowd: Tally
    crowd: Tally
    rss: list[float]

    @property
    def upstream_ms(self) -> float:
        return self.bare.mean_ms("submit")

    @property
    def ideal_rps(self) -> float:
        slots = self.workers * self.threads
        return slots * 1000 / self.upstream_ms if self.upstream_ms else 0.0

    def lines(self) -> list[str]:
        ratio = self.crowd.submit_rps / self.ideal_rps if self.ideal_rps else 0.0
        overhead = {
            name: self.portal.percentile_ms("submit", share)
            - self.bare.percentile_ms("submit", share)
            for name, share in (("p50", 0.5), ("p99", 0.99))
        }
        return [
            f"submit_throughput ratio={ratio:.2f} portal_rps={self.crowd.submit_rps:.1f} "
            f"ideal_rps={self.ideal_rps:.1f} workers={self.workers} threads={self.threads} "
            f"upstream_ms={self.upstream_ms:.1f}",
            f"submit_overhead_p50_ms={overhead['p50']:.1f}",
            f"submit_overhead_p99_ms={overhead['p99']:.1f}",
            f"worker_rss_mb={max(self.rss, default=0.0):.1f}",
        ]

    def tallies(self) -> tuple[Tally, ...]:
        return (self.bare_quiet, self.quiet, self.bare, self.portal, self.bare_crowd, self.crowd)

    def notes(self) -> list[str]:
        """Return `#` lines with the figures that explain the four above."""
        bare_ratio = self.bare_crowd.submit_rps / self.ideal_rps if self.ideal_rps else 0.0
        quiet = self.quiet.percentile_ms("submit", 0.5)
        bare_quiet = self.bare_quiet.percentile_ms("submit", 0.5)
        return [
            f"# submit: {self.kind}; bare Flask at the crowd {self.bare_crowd.submit_rps:.1f} "
            f"submits/s (ratio {bare_ratio:.2f}); portal submit p50 at the crowd "
            f"{self.crowd.percentile_ms('submit', 0.5):.0f} ms; server CPU per form+submit "
            f"{self.portal.cpu_ms:.1f} ms portal, {self.bare.cpu_ms:.1f} ms bare",
            f"# submit: with {self.workers} users (one per worker, CPU to spare) submit p50 "
            f"{quiet:.1f} ms portal, {bare_quiet:.1f} ms bare: "
            f"overhead {quiet - bare_quiet:.1f} ms",
        ]


def bench(folder: Path, env: dict[str, str], kind: str, url: str) -> tuple[Results, Tally]:
    """Run the measures against the sandbox; return them and the memory mix's tally."""
    workers, threads = gunicorn_conf.workers, gunicorn_conf.threads
    seconds, slots = run.SECONDS, workers * threads
    sandbox_options = [
        *("--worker-class", "gthread", "--workers", "1", "--threads", str(4 * slots + 16)),
        *("--log-level", "warning"),
    ]
    logs = folder / "sandbox.log", folder / "bare.log", folder / "portal.log"
    # One user per worker (CPU to spare), one per thread, then a crowd.
    users = (workers, slots, slots * CROWD)
    with run.gunicorn("portal.sandbox:create_app()", env, logs[0], sandbox_options) as sandbox:
        env.update(BENCH_SANDBOX_URL=sandbox.url, PORTAL_AUTHENTICATE_API_URL=sandbox.url)
        say(f"submit: sandbox answering after {DELAY * 1000:.0f} ms; portal database {kind}")
        with run.gunicorn("bench.bare_submit:app", env, logs[1], SERVING) as server:
            bare = [measure("bare Flask", server, logs[1], n, seconds) for n in users]
        env["BENCH_DATABASE_URL"] = url
        with run.gunicorn("bench.wsgi_portal:app", env, logs[2], SERVING) as server:
            runs = [measure("portal", server, logs[2], n, seconds) for n in users]
        with run.gunicorn("bench.wsgi_portal:app", env, logs[2], SERVING) as server:
            mix, rss = memory_mix(server, slots)
    logged = [line for log in logs for line in run.log_problems(log)]
    for line in list(dict.fromkeys(logged))[:5]:
        say(f"  PROBLEM logged: {line[:300]}")
    if logged:
        mix.problems["error lines logged"] += len(logged)
    quiet, near, crowd = runs
    return Results(kind, workers, threads, bare[0], quiet, bare[1], near, bare[2], crowd, rss), mix


def memory_mix(portal: run.Server, users: int) -> tuple[Tally, list[float]]:
    """Serve MIX_REQUESTS requests of the mix; return the tally and the workers' VmRSS."""
    drive(portal.url, 1, form_and_submit, 0.5)  # every worker has booted and served
    say(f"  fresh portal workers: {fmt_mb(worker_rss_mb(portal))}")
    cpu = portal.cpu_seconds()
    mix = drive(portal.url, users, mix_journey, 600, MIX_REQUESTS)
    cpu = portal.cpu_seconds() - cpu
    rss = worker_rss_mb(portal)
    say(
        f"  memory mix: {mix.requests} requests ({describe(mix)}) in {mix.seconds:.1f} s, "
        f"server CPU {cpu * 1000 / max(1, mix.requests):.1f} ms per request; "
        f"workers then: {fmt_mb(rss)}"
    )
    report_problems("memory mix", mix)
    return mix, rss


def describe(tally: Tally) -> str:
    return ", ".join(f"{len(v)} {kind}" for kind, v in sorted(tally.latencies.items()))


def fmt_mb(sizes: list[float]) -> str:
    return ", ".join(f"{size:.1f} MB" for size in sizes) or "none found"


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workers, threads = gunicorn_conf.workers, gunicorn_conf.threads
    slots = workers * threads
    print(
        f"# submit: gunicorn {workers} workers × {threads} threads (portal/gunicorn_conf.py) "
        f"for the portal and bare Flask; sandbox delay {DELAY * 1000:.0f} ms; {workers}, {slots} "
        f"then {slots * CROWD} users for {run.SECONDS} s after {run.WARMUP} s warm-up; memory "
        f"after {MIX_REQUESTS:,} requests of the mix",
        flush=True,
    )
    env = settings()
    # The migrating app in this process passes the same production checks.
    os.environ.update({k: v for k, v in env.items() if k.startswith("PORTAL_")})
    with tempfile.TemporaryDirectory(prefix="portal-bench-submit-") as tmp:
        folder = Path(tmp)
        with database(folder) as (kind, url):
            results, mix = bench(folder, env, kind, url)
    unexpected = sum(sum(tally.problems.values()) for tally in (*results.tallies(), mix))
    for line in [*results.notes(), f"# submit: unexpected answers or errors: {unexpected}"]:
        print(line)
    for line in results.lines():
        print(line)
    sys.stdout.flush()
    return 1 if unexpected or mix.requests < MIX_REQUESTS else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("interrupted; servers stopped and the benchmark database dropped")
        sys.exit(130)
