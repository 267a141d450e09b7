"""Benchmark the portal against a bare Flask app: `make bench` or `python bench/run.py`.

Both are served by gunicorn with the same settings and driven by the same load tool (wrk
with bench/load.lua; bench/pyload.py when wrk is missing). Each measure ends as one line,
`NAME ratio=X.XX portal_rps=... bare_rps=... ...`, on stdout; progress and diagnostics go to
stderr. Measures:

- webhook_sqlite, webhook_postgres: webhook intake, a mix of new, duplicate and unknown
  events (see load.lua). Aim: ratio >= 0.5.
- status_poll: the status JSON poll of a warm server, 200 path. Aim: ratio >= 0.8. The 304
  (If-None-Match) path is measured too and shown as a raw figure.
- submit_throughput, submit_overhead_p50_ms, submit_overhead_p99_ms, worker_rss_mb: the
  onboarding submit against a sandbox that answers after 150 ms, and worker memory after
  10,000 requests; see bench/submit.py.
- dashboard_sqlite, dashboard_postgres, then dashboard_sqlite_ms and dashboard_postgres_ms:
  admin pages at 10,000 and 1,000,000 records, run last; see bench/dashboard.py.

ratio is portal req/s over bare req/s. Next to it, *_cpu_ms is the CPU time the gunicorn
processes spent per request (read from /proc; PostgreSQL's own CPU is not in it): on a
shared machine req/s moves with whatever else runs, CPU per request much less.

Every server binds 127.0.0.1 and every load run is bounded in time. PostgreSQL is reached
at BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test), where a
database is created for the run and dropped at the end; if it is unreachable, that measure
is skipped. BENCH_SECONDS and BENCH_WARMUP change the load and warm-up durations;
BENCH_TOOL=python forces the Python load generator. BENCH_ONLY runs only the measures it
names, comma-separated (e.g. `BENCH_ONLY=webhook_postgres,status_poll`; `submit` and `dashboard`
name bench/submit.py and bench/dashboard.py).

Exits 1 when the portal answered anything but 2xx/304, logged errors, stored a different
number of events than its answers imply, or left records whose state disagrees with their
events.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import pyload  # noqa: E402
from bench.wsgi_portal import build_app  # noqa: E402
from portal import store  # noqa: E402
from portal.config import status_map  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.helpers import status_signer  # noqa: E402
from portal.migrating import init_migrations  # noqa: E402
from portal.models import Verification, WebhookEvent  # noqa: E402

# The same for the portal and for bare Flask.
LOAD_THREADS = 2
CONNECTIONS = 16
WORKERS = 2
GUNICORN = [
    *("--workers", str(WORKERS), "--threads", "4", "--worker-class", "gthread"),
    # Without a cap, the first worker to wake accepts all of the load tool's keep-alive
    # connections and the second one idles; the cap splits them evenly between the workers.
    *("--worker-connections", str(CONNECTIONS // WORKERS)),
    *("--log-level", "warning"),  # and no access log
]
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
CONDITIONAL_SECONDS = max(1, SECONDS // 2)
ONLY = {name.strip() for name in os.environ.get("BENCH_ONLY", "").split(",") if name.strip()}

SEEDED = 1000  # verifications in each database
DUPLICATES = 20  # events recorded before the run and re-sent during it (load.lua)
TOKENS = 100  # status links the poll cycles through
NONCE = "{nonce}"  # replaced by a fresh value for each load run

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
LOAD_SCRIPT = Path(__file__).resolve().parent / "load.lua"
LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b|CRITICAL|WORKER TIMEOUT|database is locked")


@dataclass
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    socket_errors: int
    p50_ms: float
    p99_ms: float
    counts: dict[str, int] = field(default_factory=dict)
    # CPU time the server's processes (gunicorn master and workers) used during the run.
    server_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        """Server CPU per request: steadier than req/s when other work shares the machine."""
        return self.server_cpu * 1000 / self.requests if self.requests else 0.0

    def answered(self, *codes: int) -> int:
        return sum(self.counts.get(f"status_{code}", 0) for code in codes)

    def others(self, *codes: int) -> int:
        """Responses with a status not in `codes`, plus socket errors and timeouts."""
        statuses = sum(v for k, v in self.counts.items() if k.startswith("status_"))
        return statuses - self.answered(*codes) + self.socket_errors

    def outcomes(self) -> dict[str, int]:
        return {k[8:]: v for k, v in sorted(self.counts.items()) if k.startswith("outcome_")}


class Wrk:
    def run(self, url: str, args: list[str], seconds: int) -> Load:
        command = ["wrk", f"-t{LOAD_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s"]
        command += ["--timeout", "10s", "-s", str(LOAD_SCRIPT), url, "--", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        totals: dict[str, int] = {}
        counts: dict[str, int] = {}
        for line in done.stdout.splitlines():
            if line.startswith("BENCH "):
                totals = {k: int(v) for k, v in (p.split("=") for p in line.split()[1:])}
            elif line.startswith("BENCH_COUNT "):
                key, value = line.split()[1].split("=")
                counts[key] = int(value)
        if done.returncode != 0 or not totals:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        socket_errors = sum(totals[k] for k in ("connect", "read", "write", "timeout"))
        return Load(
            requests=totals["requests"],
            seconds=totals["duration_us"] / 1e6,
            socket_errors=socket_errors,
            p50_ms=totals["p50_us"] / 1000,
            p99_ms=totals["p99_us"] / 1000,
            counts=counts,
        )


class PythonLoad:
    def run(self, url: str, args: list[str], seconds: int) -> Load:
        mode, data_file, *rest = args
        figures = pyload.run(url, mode, data_file, rest, seconds, CONNECTIONS)
        counts = {k: int(v) for k, v in figures.items() if k.startswith(("status_", "outcome_"))}
        return Load(
            requests=int(figures["requests"]),
            seconds=figures["seconds"],
            socket_errors=int(figures["errors_socket"]),
            p50_ms=figures["p50_ms"],
            p99_ms=figures["p99_ms"],
            counts=counts,
        )


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    pid: int  # gunicorn's master; its workers share its process group

    def cpu_seconds(self) -> float:
        """Return the user+system CPU time used so far by every process in the group."""
        ticks = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            # After the command: state, ppid, pgrp, ... utime and stime are the 12th and 13th.
            if int(fields[2]) == self.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def gunicorn(
    app_path: str, env: dict[str, str], log_path: Path, options: Sequence[str] = GUNICORN
) -> Iterator[Server]:
    """Serve `app_path` on a free loopback port; yield the server; always stop it."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", *options, "--bind", f"127.0.0.1:{port}"]
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [*command, app_path],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process, log_path)
        yield Server(f"http://127.0.0.1:{port}", process.pid)
    finally:
        stop(process)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{tail(log_path)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not listen on port {port}:\n{tail(log_path)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn (and its workers, which share its process group)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=5)


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def log_problems(path: Path) -> list[str]:
    """Return the lines gunicorn and the portal logged that signal trouble."""
    text = path.read_text(errors="replace")
    return [line for line in text.splitlines() if LOG_PROBLEM.search(line)]


# --- databases -----------------------------------------------------------------------------


@dataclass
class Seeded:
    url: str
    uuid_file: Path
    token_file: Path
    seconds: float


def seed(url: str, folder: Path, name: str) -> Seeded:
    """Migrate the database at `url`, add the verifications and the duplicate events."""
    started = time.monotonic()
    app = build_app(url)
    init_migrations(app)
    codes = [str(uuid.uuid4()) for _ in range(SEEDED)]
    with app.app_context():
        upgrade()
        for code in codes:
            store.add_verification(code, secrets.token_urlsafe(16))
        table = status_map(app.config)
        # load.lua re-sends exactly these deliveries as its duplicates.
        for k, code in enumerate(codes[:DUPLICATES], start=1):
            event = store.IncomingEvent(
                event_id=f"bench-dup-{k}",
                event_type=store.STATUS_EVENT,
                user_access_code=code,
                raw_status="started",
                verification_method="DOCUMENT",
                event_date=pyload.EPOCH,
            )
            store.record_event(event, table)
        signer = status_signer()
        tokens = [signer.dumps(code) for code in codes[:TOKENS]]
        db.engine.dispose()
    uuid_file = folder / f"{name}-uuids.txt"
    uuid_file.write_text("\n".join(codes) + "\n")
    token_file = folder / f"{name}-tokens.txt"
    token_file.write_text("\n".join(tokens) + "\n")
    return Seeded(url, uuid_file, token_file, time.monotonic() - started)


def check_records(app: Flask) -> tuple[int, int]:
    """Return (webhook event rows, records whose stored state disagrees with their events)."""
    table = status_map(app.config)
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(WebhookEvent)) or 0
        by_code: dict[str, list[WebhookEvent]] = {}
        for event in db.session.scalars(
            select(WebhookEvent).where(
                WebhookEvent.event_type.in_(store.STATE_EVENTS),
                WebhookEvent.event_date.is_not(None),
            )
        ):
            by_code.setdefault(event.user_access_code or "", []).append(event)
        mismatched = 0
        for record in db.session.scalars(select(Verification)):
            folded = store.fold_events(by_code.get(record.user_access_code, []), table)
            stored = (record.state, record.raw_status, record.last_event_at)
            if stored != (folded.state, folded.raw_status, folded.last_event_at):
                mismatched += 1
        db.session.remove()
        db.engine.dispose()
    return rows, mismatched


def postgres_admin() -> Any | None:
    """Connect to PostgreSQL for CREATE/DROP DATABASE, or return None if it is unreachable."""
    import psycopg

    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    try:
        return psycopg.connect(
            url.render_as_string(hide_password=False), autocommit=True, connect_timeout=3
        )
    except psycopg.Error as exc:
        print(f"PostgreSQL unreachable at {url}: {str(exc).strip()}", file=sys.stderr)
        return None


@contextmanager
def postgres_database(admin: Any, prefix: str = "bench_portal") -> Iterator[str]:
    """Create <prefix>_<pid> for the run; yield its SQLAlchemy URL; drop it afterwards."""
    name = f"{prefix}_{os.getpid()}"
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {name}")
    try:
        url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- measures ------------------------------------------------------------------------------


class Bench:
    def __init__(self, tool: Wrk | PythonLoad, folder: Path) -> None:
        self.tool = tool
        self.warm = Load(0, 0.0, 0, 0.0, 0.0)
        self.folder = folder
        self.webhook_secret = secrets.token_urlsafe(32)
        self.env = dict(
            os.environ,
            PORTAL_SECRET_KEY=secrets.token_urlsafe(48),
            PORTAL_AUTHENTICATE_API_KEY="bench-" + secrets.token_hex(16),
            PORTAL_WEBHOOK_SECRET=self.webhook_secret,
        )
        # The seeding app in this process passes the same production checks.
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("PORTAL_")})
        self.failed = False

    @property
    def webhook_path(self) -> str:
        return f"/webhooks/authenticate/{self.webhook_secret}"

    def webhook_args(self, seeded: Seeded) -> list[str]:
        return ["webhook", str(seeded.uuid_file), NONCE, str(DUPLICATES)]

    def load(
        self, label: str, server: Server, path: str, args: list[str], seconds: int, warmup: bool
    ) -> Load:
        """Warm up, then measure; each run gets its own nonce, so its event ids are new.

        The warm-up's figures are kept in self.warm (webhook rows are checked against them).
        """
        url = server.url + path
        self.warm = Load(0, 0.0, 0, 0.0, 0.0)
        if warmup and WARMUP:
            self.warm = self.tool.run(url, with_nonce(args), WARMUP)
        cpu = server.cpu_seconds()
        result = self.tool.run(url, with_nonce(args), seconds)
        result.server_cpu = server.cpu_seconds() - cpu
        figures = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
        print(
            f"  {label}: {result.rps:.1f} req/s, p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms, server CPU {result.cpu_ms:.2f} ms/req, "
            f"socket errors {result.socket_errors}; {figures}",
            file=sys.stderr,
        )
        return result

    def bare_webhook(self, server: Server, seeded: Seeded) -> Load:
        print("bare Flask", file=sys.stderr)
        args = self.webhook_args(seeded)
        return self.load("webhook", server, self.webhook_path, args, SECONDS, warmup=True)

    def bare_status(self, server: Server, seeded: Seeded) -> Load:
        print("bare Flask", file=sys.stderr)
        args = ["status", str(seeded.token_file)]
        return self.load("status", server, "/", args, SECONDS, warmup=True)

    def portal_webhook(self, name: str, seeded: Seeded, bare: Load) -> str:
        print(f"{name}: portal (seeded in {seeded.seconds:.1f} s)", file=sys.stderr)
        log_path = self.folder / f"{name}.log"
        env = dict(self.env, BENCH_DATABASE_URL=seeded.url)
        with gunicorn("bench.wsgi_portal:app", env, log_path) as server:
            args = self.webhook_args(seeded)
            result = self.load("webhook", server, self.webhook_path, args, SECONDS, warmup=True)
        problems = log_problems(log_path)
        rows, mismatched = check_records(build_app(seeded.url))
        self.report(name, result, problems, mismatched)
        stored = ("recorded", "ignored", "orphan")
        expected = DUPLICATES + sum(
            load.outcomes().get(outcome, 0) for load in (self.warm, result) for outcome in stored
        )
        print(f"  event rows stored: {rows}; answers imply {expected}", file=sys.stderr)
        # Requests still in flight when a load run stops are stored but never counted.
        if not expected <= rows <= expected + 2 * CONNECTIONS:
            self.failed = True
            print(f"  PROBLEM {name}: stored event rows do not match answers", file=sys.stderr)
        return measure_line(
            name,
            result,
            bare,
            portal_non2xx=result.others(200, 201, 202, 204),
            portal_log_errors=len(problems),
            portal_state_mismatches=mismatched,
        )

    def status_poll(self, seeded: Seeded, bare: Load) -> str:
        name = "status_poll"
        print(f"{name}: portal (seeded in {seeded.seconds:.1f} s)", file=sys.stderr)
        log_path = self.folder / f"{name}.log"
        env = dict(self.env, BENCH_DATABASE_URL=seeded.url)
        with gunicorn("bench.wsgi_portal:app", env, log_path) as server:
            etag_file = self.folder / "tokens-etags.txt"
            etag_file.write_text(etags(server.url, seeded.token_file))
            args = ["status", str(seeded.token_file)]
            plain = self.load("200 path", server, "/", args, SECONDS, warmup=True)
            args = ["status", str(etag_file), "conditional"]
            conditional = self.load(
                "304 path", server, "/", args, CONDITIONAL_SECONDS, warmup=False
            )
        problems = log_problems(log_path)
        self.report(name, plain, problems, 0, expected=(200,))
        self.report(name + " (304)", conditional, [], 0, expected=(304,))
        return measure_line(
            name,
            plain,
            bare,
            portal_non2xx=plain.others(200) + conditional.others(304),
            portal_log_errors=len(problems),
            portal_304_rps=f"{conditional.rps:.1f}",
            portal_304_p99_ms=f"{conditional.p99_ms:.1f}",
            portal_304_cpu_ms=f"{conditional.cpu_ms:.2f}",
        )

    def report(
        self,
        name: str,
        result: Load,
        problems: list[str],
        mismatched: int,
        expected: tuple[int, ...] = (200, 201, 202, 204),
    ) -> None:
        unexpected = result.others(*expected)
        if unexpected or problems or mismatched:
            self.failed = True
        if unexpected:
            print(f"  PROBLEM {name}: {unexpected} unexpected answers or errors", file=sys.stderr)
        if result.answered(429):
            print(
                f"  PROBLEM {name}: the rate limit answered 429; the figure measures the limiter",
                file=sys.stderr,
            )
        if problems:
            print(f"  PROBLEM {name}: {len(problems)} error lines logged, e.g.:", file=sys.stderr)
            for line in list(dict.fromkeys(problems))[:5]:
                print(f"    {line[:300]}", file=sys.stderr)
        if mismatched:
            print(
                f"  PROBLEM {name}: {mismatched} records' stored state disagrees with their events",
                file=sys.stderr,
            )


def with_nonce(args: list[str]) -> list[str]:
    """Put a fresh run nonce in place of NONCE: load.lua builds new event ids from it."""
    return [f"r{secrets.token_hex(4)}" if arg == NONCE else arg for arg in args]


def etags(base: str, token_file: Path) -> str:
    """Fetch each status token once (this also warms the server); return "token etag" lines."""
    lines = []
    for token in token_file.read_text().split():
        request = urllib.request.Request(
            f"{base}/status/{token}.json", headers={"Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            etag = response.headers.get("ETag", "").strip('"')
            json.load(response)
        lines.append(f"{token} {etag}")
    return "\n".join(lines) + "\n"


def measure_line(name: str, portal: Load, bare: Load, **extra: Any) -> str:
    ratio = portal.rps / bare.rps if bare.rps else 0.0
    figures = [
        f"ratio={ratio:.2f}",
        f"portal_rps={portal.rps:.1f}",
        f"bare_rps={bare.rps:.1f}",
        *(f"{k}={v}" for k, v in extra.items()),
        f"portal_p99_ms={portal.p99_ms:.1f}",
        f"bare_p99_ms={bare.p99_ms:.1f}",
        f"portal_cpu_ms={portal.cpu_ms:.2f}",
        f"bare_cpu_ms={bare.cpu_ms:.2f}",
    ]
    return f"{name} " + " ".join(figures)


def wanted(*names: str) -> bool:
    """Tell whether BENCH_ONLY (when set) names any of these measures."""
    return not ONLY or not ONLY.isdisjoint(names)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tool: Wrk | PythonLoad
    if shutil.which("wrk") and os.environ.get("BENCH_TOOL", "wrk") == "wrk":
        tool = Wrk()
        print(
            f"# load: wrk -t{LOAD_THREADS} -c{CONNECTIONS}, {SECONDS} s after {WARMUP} s warm-up; "
            f"gunicorn {' '.join(GUNICORN)}"
        )
    else:
        tool = PythonLoad()
        print(
            "# load: wrk is not installed (or BENCH_TOOL=python), so the Python load generator "
            "(bench/pyload.py) "
            f"with {CONNECTIONS} threads; it competes with the servers for CPU, so ratios are "
            "less reliable"
        )
    sys.stdout.flush()
    lines = []
    with tempfile.TemporaryDirectory(prefix="portal-bench-") as tmp:
        folder = Path(tmp)
        bench = Bench(tool, folder)
        webhook_db = seed(f"sqlite:///{folder / 'webhook.sqlite3'}", folder, "webhook")
        status_db = seed(f"sqlite:///{folder / 'status.sqlite3'}", folder, "status")
        # The baseline stays up, idle, while the portal runs, so each bare measurement can
        # sit just before the portal measurements it is compared with.
        with gunicorn("bench.bare:app", dict(bench.env), folder / "bare.log") as bare:
            if wanted("webhook_sqlite", "webhook_postgres"):
                bare_webhook = bench.bare_webhook(bare, webhook_db)
            if wanted("webhook_sqlite"):
                lines.append(bench.portal_webhook("webhook_sqlite", webhook_db, bare_webhook))
            admin = postgres_admin() if wanted("webhook_postgres") else None
            if admin is None and wanted("webhook_postgres"):
                lines.append(f"webhook_postgres skipped: PostgreSQL unreachable at {POSTGRES_URL}")
            elif admin is not None:
                with admin, postgres_database(admin) as url:
                    pg = seed(url, folder, "postgres")
                    lines.append(bench.portal_webhook("webhook_postgres", pg, bare_webhook))
            if wanted("status_poll"):
                bare_status = bench.bare_status(bare, status_db)
                lines.append(bench.status_poll(status_db, bare_status))
    for line in lines:
        print(line)
    sys.stdout.flush()
    # The onboarding submit over a slow upstream, and worker memory: bench/submit.py.
    # Then the admin dashboard at 10,000 and 1,000,000 records: bench/dashboard.py.
    from bench import dashboard, submit

    submit_failed = wanted("submit") and submit.main() != 0
    dashboard_failed = wanted("dashboard") and dashboard.main() != 0
    return 1 if bench.failed or submit_failed or dashboard_failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; servers stopped and the benchmark database dropped", file=sys.stderr)
        sys.exit(130)
