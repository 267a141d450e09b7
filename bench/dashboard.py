"""Benchmark the admin dashboard at 10,000 and at 1,000,000 records: `python bench/dashboard.py`.

`make bench` runs it after the load benchmarks (bench/run.py). For SQLite and then
PostgreSQL it seeds 10,000 verifications with their webhook events, times four admin pages,
grows the same database to BENCH_DASHBOARD_ROWS (default 1,000,000) records and times them
again. Pages:

- dashboard: /admin (counts per state, the 30-day funnel, median and daily chart, recent rows)
- filtered:  /admin/records?state=failed&created_from=<30 days ago>
- deep:      /admin/records after following its rel="next" link DEEP_PAGES times
- record:    /admin/records/<uuid> for a different random seeded UUID on each request

Requests go through Flask's test client, in this process, to the portal built as in
production (not debug, not testing, real secrets, CSRF on), signed in as an admin created
for the run: no server or network in the figures, so they are steadier on a shared machine.
Each page gets WARMUP untimed requests, then TIMED timed ones (SLOW_TIMED when a page takes
over SLOW_MS, to keep the run bounded); every answer must be a 200 with the expected rows.

stdout ends with one line per measure; details go to stderr and `#` comment lines:

    dashboard_sqlite ratio=X.XX dashboard_10k_ms=... dashboard_1m_ms=... filtered_10k_ms=...
    dashboard_postgres ratio=X.XX ...
    dashboard_sqlite_ms=<slowest median at the large size>
    dashboard_postgres_ms=<slowest median at the large size>

ratio is the largest, over the pages, of (median at the large size / median at 10,000).
Aim: every page under 100 ms at 1,000,000 records, ratio under 2. The key names keep "1m"
when BENCH_DASHBOARD_ROWS asks for another size (a comment line gives the sizes).

Seeding: the rows are generated once for both databases (a seeded RNG, times relative to
now) into tab-separated files, then bulk-loaded: Core's INSERT executemany'd in BATCH-row
transactions on SQLite (synchronous=OFF on the seeding connection only), COPY on PostgreSQL.
Indexes that back no constraint are dropped for each load and made again from their own
stored definitions afterwards (a sort beats millions of random B-tree inserts); then
ANALYZE (VACUUM ANALYZE on PostgreSQL, as autovacuum would eventually do). The bulk load
bypasses the store, so the dashboard's roll-up is then recounted as `flask dashboard rebuild`
does (its time is printed apart from the seeding). The SQLite file
lives in a temporary folder and the PostgreSQL database (bench_dash_<pid>) is dropped at the
end, also on errors and SIGTERM. PostgreSQL is reached at BENCH_POSTGRES_URL as in
bench/run.py; when it is unreachable, its measures are skipped. Exits 1 when any answer was
wrong.
"""

from __future__ import annotations

import gc
import html
import logging
import math
import os
import random
import re
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from sqlalchemy import (  # noqa: E402
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
)
from sqlalchemy.engine import Engine, make_url  # noqa: E402

from bench import run  # noqa: E402
from bench.wsgi_portal import build_app  # noqa: E402
from portal.extensions import db  # noqa: E402
from portal.migrating import init_migrations  # noqa: E402
from portal.models import (  # noqa: E402
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    NEEDS_REVIEW,
    PENDING,
    TERMINAL_STATES,
    VERIFIED,
)
from portal.store import STATUS_EVENT, rollup  # noqa: E402
from portal.store import admin as admin_store  # noqa: E402

SMALL = 10_000
ROWS = int(os.environ.get("BENCH_DASHBOARD_ROWS", "1000000"))
WARMUP = 3
TIMED = 15
SLOW_TIMED = 7
SLOW_MS = 1000.0
DEEP_PAGES = 20
PAGE_ROWS = 50  # the records table's page size
BATCH = 50_000
DAYS = 90  # records were created over the last DAYS days
FILTER_DAYS = 30
SEED = 20261203
PAGES = ("dashboard", "filtered", "deep", "record")
AIM_MS = 100.0
AIM_RATIO = 2.0
EXPLAIN_MS = 10.0  # statements slower than this get their plan logged
PLAN_LINES = 14

# Share of records in each state, in percent.
STATE_MIX = (
    (VERIFIED, 55),
    (FAILED, 15),
    (NEEDS_REVIEW, 10),
    (IN_PROGRESS, 10),
    (PENDING, 5),
    (EXPIRED, 5),
)
# Provider statuses the default status map turns into each state.
STARTED = ("started", "started", "started", "pending", "initiated")
OUTCOMES = {
    VERIFIED: ("verified", "approved", "completed"),
    FAILED: ("failed", "declined", "rejected"),
    NEEDS_REVIEW: ("review", "manual_review", "under_review"),
    EXPIRED: ("expired", "abandoned"),
}
METHODS = ("governmentId", "governmentId", "DOCUMENT", "passport", "driversLicense")
LINK_LIFETIME = 7 * 86400 * 1_000_000  # an unfinished Medallion link expires after a week
ORPHAN_EVERY = 500  # one event for a UUID this portal never created, per this many records

SECOND = 1_000_000  # times are whole microseconds since the epoch while generating
NULL = "\\N"  # COPY's text format; also read back for SQLite
V_COLUMNS = (
    "user_access_code",
    "state",
    "raw_status",
    "verification_method",
    "created_at",
    "updated_at",
    "link_issued_at",
    "medallion_token",
    "last_event_at",
    "decided_at",
)
E_COLUMNS = (
    "event_id",
    "event_type",
    "user_access_code",
    "raw_status",
    "verification_method",
    "event_date",
    "received_at",
    "orphan",
)
# The same tables with every time as text, for SQLite's executemany: the values are already
# in SQLAlchemy's SQLite format, so no per-value conversion runs while seeding.
LOAD = MetaData()
V_LOAD = Table("verifications", LOAD, *(Column(name, String) for name in V_COLUMNS))
E_LOAD = Table(
    "webhook_events",
    LOAD,
    *(Column(name, String) for name in E_COLUMNS[:-1]),
    Column("orphan", Integer),
)

NEXT_LINK = re.compile(r'<a href="([^"]+)" rel="next">')
RECORD_ROW = re.compile(r'<td><a class="uuid" href="/admin/records/[0-9a-f-]{36}">')
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- data ----------------------------------------------------------------------------------


@dataclass
class Segment:
    """One generated slice of the data set: COPY-format files and what they hold."""

    verifications: Path
    events: Path
    records: int
    event_rows: int
    # (UUID, its status events) for some records, for the record page.
    samples: list[tuple[str, int]]


class Generator:
    """Realistic verifications and webhook events, consistent with the portal's state fold."""

    def __init__(self, now: datetime) -> None:
        self.rng = random.Random(SEED)
        self.random = self.rng.random
        self.bits = self.rng.getrandbits
        self.now = int(now.timestamp()) * SECOND
        self.minutes: dict[int, str] = {}
        self.states = [state for state, share in STATE_MIX for _ in range(share)]
        # exp(sigma * z) for 4096 standard normal z, per sigma: log-normal delays by lookup.
        normal = [self.rng.gauss(0.0, 1.0) for _ in range(4096)]
        self.spread = {sigma: [math.exp(sigma * z) for z in normal] for sigma in (1.0, 1.2, 1.5)}

    def uuid(self) -> str:
        h = f"{self.bits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def stamp(self, moment: int | None) -> str:
        """Format as SQLAlchemy stores DateTime on SQLite (PostgreSQL's COPY reads it too)."""
        if moment is None:
            return NULL
        minute, rest = divmod(moment, 60 * SECOND)
        prefix = self.minutes.get(minute)
        if prefix is None:
            when = datetime.fromtimestamp(minute * 60, UTC)
            prefix = self.minutes[minute] = when.strftime("%Y-%m-%d %H:%M:")
        # %-formatting: twice as fast as an f-string with format specs, for ~7 million values.
        return "%s%02d.%06d" % (prefix, *divmod(rest, SECOND))  # noqa: UP031

    def after(self, moment: int, median_seconds: float, sigma: float) -> int:
        """A moment a log-normal delay after `moment`, squeezed in before now when needed."""
        delay = int(median_seconds * self.spread[sigma][self.bits(12)] * SECOND)
        room = self.now - SECOND - moment
        if room <= 0:
            return moment
        if delay > room // 2:
            delay = min(delay, room // 2 + int(self.random() * (room // 2)))
        return moment + delay

    def segment(self, folder: Path, name: str, count: int, samples: int = 400) -> Segment:
        """Write `count` records created over the last DAYS days, oldest first, with events."""
        start = self.now - DAYS * 86400 * SECOND
        span = self.now - SECOND - start
        created = sorted(start + int(self.random() * span) for _ in range(count))
        every = max(1, count // samples)
        kept: list[tuple[str, int]] = []
        event_rows = 0
        v_path, e_path = folder / f"{name}-verifications.tsv", folder / f"{name}-events.tsv"
        with open(v_path, "w") as v_file, open(e_path, "w") as e_file:
            v_lines: list[str] = []
            e_lines: list[str] = []
            for index, created_at in enumerate(created):
                uac = self.uuid()
                v_line, events = self.record(uac, created_at)
                v_lines.append(v_line)
                e_lines.extend(events)
                event_rows += len(events)
                if index % every == 0:
                    kept.append((uac, len(events)))
                if index % ORPHAN_EVERY == ORPHAN_EVERY - 1:
                    moment = self.after(created_at, 3600, 1.0)
                    e_lines.append(self.event_line(self.uuid(), "started", None, moment, True))
                    event_rows += 1
                if len(v_lines) >= 10_000:
                    v_file.write("".join(v_lines))
                    e_file.write("".join(e_lines))
                    v_lines.clear()
                    e_lines.clear()
            v_file.write("".join(v_lines))
            e_file.write("".join(e_lines))
        return Segment(v_path, e_path, count, event_rows, kept)

    def event_line(
        self, uac: str, status: str, method: str | None, moment: int, orphan: bool = False
    ) -> str:
        received = min(moment + 50_000 + int(self.random() * 2 * SECOND), self.now)
        values = (
            self.uuid(),
            STATUS_EVENT,
            uac,
            status,
            method or NULL,
            self.stamp(moment),
            self.stamp(received),
            "t" if orphan else "f",
        )
        return "\t".join(values) + "\n"

    def record(self, uac: str, created_at: int) -> tuple[str, list[str]]:
        """Return one verification line and its event lines, which fold to its state."""
        rng, rand = self.rng, self.random
        state = self.states[int(rand() * 100)]
        if state == EXPIRED and self.now - created_at < LINK_LIFETIME:
            state = IN_PROGRESS  # its link has not had the time to expire
        link_at = None
        if state != PENDING or rand() < 0.7:
            link_at = created_at + SECOND + int(rand() * 7 * SECOND)
        method = rng.choice(METHODS)
        timeline: list[tuple[str, int]] = []  # (provider status, eventDate)
        if state != PENDING:
            assert link_at is not None
            moment = self.after(link_at, 600, 1.5)  # the person opens the link
            timeline.append((rng.choice(STARTED), moment))
            if state != EXPIRED and rand() < 0.3:
                moment = self.after(moment, 120, 1.0)
                timeline.append(("in_progress", moment))
            if state == EXPIRED:
                moment = min(link_at + LINK_LIFETIME, self.now - SECOND)
                timeline.append((rng.choice(OUTCOMES[EXPIRED]), max(moment, timeline[-1][1])))
            elif state != IN_PROGRESS:
                median = 180 if state == NEEDS_REVIEW else 300
                moment = self.after(moment, median, 1.2)
                timeline.append((rng.choice(OUTCOMES[state]), moment))
        events = [self.event_line(uac, status, method, moment) for status, moment in timeline]
        raw_status = last_event_at = decided_at = None
        updated_at = link_at or created_at
        if timeline:
            raw_status, last_event_at = timeline[-1]
            updated_at = max(updated_at, min(last_event_at + int(rand() * SECOND), self.now))
            if state in TERMINAL_STATES:
                decided_at = last_event_at
        values = (
            uac,
            state,
            raw_status or NULL,
            method if timeline else NULL,
            self.stamp(created_at),
            self.stamp(updated_at),
            self.stamp(link_at),
            f"{self.bits(128):032x}" if link_at else NULL,
            self.stamp(last_event_at),
            self.stamp(decided_at),
        )
        return "\t".join(values) + "\n", events


def read_batches(path: Path, size: int) -> Iterator[list[str]]:
    """Yield the file's lines `size` at a time."""
    with open(path) as lines:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


# --- databases -----------------------------------------------------------------------------


class Backend:
    name = ""

    def __init__(self, url: str) -> None:
        self.url = url

    def load(self, segment: Segment) -> None:
        raise NotImplementedError

    def explain(self, engine: Engine, statement: str, params: Any) -> list[str]:
        raise NotImplementedError


class SQLite(Backend):
    name = "sqlite"

    def load(self, segment: Segment) -> None:
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                # This connection only: the app's own keep their usual settings.
                conn.exec_driver_sql("PRAGMA synchronous=OFF")
                conn.exec_driver_sql("PRAGMA cache_size=-524288")  # 512 MiB
                conn.commit()
                # Indexes other than the keys are dropped while loading and then made again
                # from their own definitions: sorting once beats a million random inserts.
                indexes = conn.exec_driver_sql(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                    " AND tbl_name IN ('verifications', 'webhook_events')"
                ).all()
                conn.commit()
                with conn.begin():
                    for name, _ in indexes:
                        conn.exec_driver_sql(f'DROP INDEX "{name}"')
                for table, path in ((V_LOAD, segment.verifications), (E_LOAD, segment.events)):
                    # Core's INSERT, executemany'd with plain tuples: no per-row dicts.
                    statement = str(insert(table).compile(dialect=engine.dialect))
                    for batch in read_batches(path, BATCH):
                        rows = [_sqlite_row(line) for line in batch]
                        with conn.begin():
                            conn.exec_driver_sql(statement, rows)  # type: ignore[arg-type]
                with conn.begin():
                    for _, sql in indexes:
                        conn.exec_driver_sql(sql)
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        finally:
            engine.dispose()

    def explain(self, engine: Engine, statement: str, params: Any) -> list[str]:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
            return [row[3] for row in cursor.fetchall()]


def _sqlite_row(line: str) -> tuple[str | int | None, ...]:
    values = line.rstrip("\n").split("\t")
    row = tuple(None if value == NULL else value for value in values)
    if len(values) == len(E_COLUMNS):  # an event: orphan is a boolean, stored as 0 or 1
        return (*row[:-1], 1 if values[-1] == "t" else 0)
    return row


class Postgres(Backend):
    name = "postgres"

    def connect(self, autocommit: bool = False) -> Any:
        import psycopg

        url = make_url(self.url).set(drivername="postgresql")
        return psycopg.connect(url.render_as_string(hide_password=False), autocommit=autocommit)

    def load(self, segment: Segment) -> None:
        with self.connect() as conn:
            conn.execute("SET synchronous_commit = off")
            conn.execute("SET maintenance_work_mem = '256MB'")
            # As on SQLite: drop the indexes that back no constraint, load, make them again.
            indexes = conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes AS i WHERE schemaname = "
                "current_schema() AND tablename IN ('verifications', 'webhook_events') AND NOT "
                "EXISTS (SELECT FROM pg_constraint AS c WHERE c.conname = i.indexname)"
            ).fetchall()
            for name, _ in indexes:
                conn.execute(f'DROP INDEX "{name}"')
            conn.commit()
            for table, columns, path in (
                ("verifications", V_COLUMNS, segment.verifications),
                ("webhook_events", E_COLUMNS, segment.events),
            ):
                command = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                for batch in read_batches(path, BATCH):
                    with conn.cursor() as cursor, cursor.copy(command) as copy:
                        copy.write("".join(batch))
                    conn.commit()
            for _, definition in indexes:
                conn.execute(definition)
            conn.commit()
        with self.connect(autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE verifications")
            conn.execute("VACUUM ANALYZE webhook_events")

    def explain(self, engine: Engine, statement: str, params: Any) -> list[str]:
        with engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            return [row[0] for row in cursor.fetchall()]


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """Create bench_dash_<pid>; yield its URL (None when unreachable); always drop it."""
    admin = run.postgres_admin()
    if admin is None:
        yield None
        return
    with admin, run.postgres_database(admin, "bench_dash") as url:
        yield url


# --- timing --------------------------------------------------------------------------------


@dataclass
class Statements:
    """SQL run while `active`, with its time: the slowest statements of a page."""

    active: bool = False
    seen: list[tuple[float, str, Any]] = field(default_factory=list)

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            conn.info["bench_started"] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if self.active:
                elapsed = time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
                self.seen.append((elapsed * 1000, statement, params))


@dataclass
class Measure:
    medians: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    deep_path: str = "/admin/records"


class Portal:
    """The portal as production runs it, driven in this process by Flask's test client."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.app: Flask = build_app(backend.url)
        # The portal logs to stdout; this benchmark's stdout carries only its result lines.
        for handler in logging.getLogger("portal").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                handler.setStream(sys.stderr)
        self.client: FlaskClient = self.app.test_client()
        self.statements = Statements()
        self.password = secrets.token_urlsafe(18)
        init_migrations(self.app)
        with self.app.app_context():
            upgrade()
            admin_store.add_admin("bench-admin", self.password)
            self.statements.attach(db.engine)

    def sign_in(self) -> None:
        page = self.client.get("/admin/login")
        token = CSRF_FIELD.search(page.get_data(as_text=True))
        if page.status_code != 200 or token is None:
            raise RuntimeError(f"login page: {page.status_code}, CSRF token found: {bool(token)}")
        data = {"username": "bench-admin", "password": self.password, "next": ""}
        answer = self.client.post("/admin/login", data=dict(data, csrf_token=token.group(1)))
        if answer.status_code != 303:
            raise RuntimeError(f"login answered {answer.status_code}, not 303")

    def rebuild_rollup(self) -> float:
        """Recount the dashboard roll-up after a bulk load; return the seconds it took."""
        started = time.monotonic()
        with self.app.app_context():
            rollup.rebuild()
            db.session.remove()
        return time.monotonic() - started

    def reset_pool(self) -> None:
        """Drop pooled connections, so the next ones see the new row count's statistics."""
        with self.app.app_context():
            db.engine.dispose()

    def engine(self) -> Engine:
        with self.app.app_context():
            return db.engine

    def close(self) -> None:
        with self.app.app_context():
            db.session.remove()
            db.engine.dispose()


def get_page(client: FlaskClient, path: str) -> tuple[float, int, str]:
    started = time.perf_counter()
    response = client.get(path)
    body = response.get_data(as_text=True)
    return (time.perf_counter() - started) * 1000, response.status_code, body


def time_page(
    client: FlaskClient,
    path_for: Callable[[int], str],
    check: Callable[[int, str], str | None],
    problems: list[str],
    label: str,
) -> float:
    """Return the median milliseconds of a page after WARMUP requests; note wrong answers."""
    samples: list[float] = []
    timed = TIMED
    index = 0
    while index < WARMUP + timed:
        elapsed, status, body = get_page(client, path_for(index))
        problem = f"answered {status}" if status != 200 else check(index, body)
        if problem:
            problems.append(f"{label}: {path_for(index)} {problem}")
        if index >= WARMUP:
            samples.append(elapsed)
        elif index == WARMUP - 1 and elapsed > SLOW_MS:
            timed = SLOW_TIMED
        index += 1
    median = statistics.median(samples)
    say(
        f"  {label}: median {median:.1f} ms over {len(samples)} "
        f"(min {min(samples):.1f}, max {max(samples):.1f})"
    )
    return median


def count_rows(body: str) -> int:
    return len(RECORD_ROW.findall(body))


def deep_path(client: FlaskClient, problems: list[str], label: str) -> str:
    """Follow the records list's rel="next" link DEEP_PAGES times; return the last URL."""
    path = "/admin/records"
    for _ in range(DEEP_PAGES):
        _, status, body = get_page(client, path)
        found = NEXT_LINK.search(body)
        if status != 200 or found is None:
            problems.append(f"{label}: {path} answered {status} without a next link")
            break
        path = html.unescape(found.group(1))
    return path


def run_size(portal: Portal, size: int, samples: list[tuple[str, int]], label: str) -> Measure:
    """Time the four pages with `size` records in the database."""
    measure = Measure()
    client = portal.client
    rng = random.Random(SEED + size)
    gc.collect()
    total = f"<dd data-total>{size:,}</dd>"

    def dashboard_check(_: int, body: str) -> str | None:
        if total not in body or "chart-table" not in body or not count_rows(body):
            return f"lacks the total {size:,}, the chart table or the recent rows"
        return None

    measure.medians["dashboard"] = time_page(
        client, lambda _: "/admin", dashboard_check, measure.problems, f"{label} dashboard"
    )

    since = (datetime.now(UTC) - timedelta(days=FILTER_DAYS)).date().isoformat()
    filtered = f"/admin/records?state=failed&created_from={since}"

    def filtered_check(_: int, body: str) -> str | None:
        rows = count_rows(body)
        if rows != PAGE_ROWS or body.count("<td>Failed</td>") != rows:
            return f"shows {rows} rows, not {PAGE_ROWS} failed ones"
        return None

    measure.medians["filtered"] = time_page(
        client, lambda _: filtered, filtered_check, measure.problems, f"{label} filtered"
    )

    deep = deep_path(client, measure.problems, f"{label} deep")

    def deep_check(_: int, body: str) -> str | None:
        rows = count_rows(body)
        if rows != PAGE_ROWS or "continued" not in body or not NEXT_LINK.search(body):
            return f"shows {rows} rows, not {PAGE_ROWS} and a next link"
        return None

    measure.medians["deep"] = time_page(
        client, lambda _: deep, deep_check, measure.problems, f"{label} deep"
    )

    picks = [rng.choice(samples) for _ in range(WARMUP + TIMED)]

    def record_check(index: int, body: str) -> str | None:
        uac, events = picks[index]
        shown = body.count(f"<code>{STATUS_EVENT}</code>")
        if f'<span class="uuid">{uac}</span>' not in body or shown != events:
            return f"lacks the UUID or shows {shown} events, not {events}"
        return None

    measure.medians["record"] = time_page(
        client,
        lambda index: f"/admin/records/{picks[index][0]}",
        record_check,
        measure.problems,
        f"{label} record",
    )
    measure.deep_path = deep
    return measure


def slowest_statements(portal: Portal, paths: dict[str, str], label: str, count: int = 3) -> None:
    """Log each page's slowest SQL statements, with the database's plan for them."""
    engine = portal.engine()
    for page, path in paths.items():
        portal.statements.seen.clear()
        portal.statements.active = True
        elapsed, _, _ = get_page(portal.client, path)
        portal.statements.active = False
        seen = sorted(portal.statements.seen, key=lambda item: -item[0])
        total = sum(item[0] for item in seen)
        say(
            f"  {label} {page}: {elapsed:.1f} ms, {len(seen)} statements taking {total:.1f} ms; "
            "slowest:"
        )
        for ms, statement, params in seen[:count]:
            say(f"    {ms:.1f} ms: {' '.join(statement.split())[:300]}")
            if ms < EXPLAIN_MS:
                continue
            try:
                plan = portal.backend.explain(engine, statement, params)
            except Exception as exc:  # noqa: BLE001 - a diagnostic only
                plan = [f"(no plan: {exc})"]
            for line in plan[:PLAN_LINES]:
                say(f"      {line}")


# --- the run -------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    small: Measure
    large: Measure
    seed_seconds: float

    def ratio(self) -> float:
        return max(self.large.medians[p] / self.small.medians[p] for p in PAGES)

    def slowest(self) -> float:
        return max(self.large.medians[p] for p in PAGES)

    def line(self) -> str:
        figures = [f"ratio={self.ratio():.2f}"]
        for page in PAGES:
            figures.append(f"{page}_10k_ms={self.small.medians[page]:.1f}")
            figures.append(f"{page}_1m_ms={self.large.medians[page]:.1f}")
        return f"dashboard_{self.name} " + " ".join(figures)

    @property
    def problems(self) -> list[str]:
        return self.small.problems + self.large.problems


def bench_backend(backend: Backend, small: Segment, grow: Segment) -> Result:
    label = f"dashboard_{backend.name}"
    portal = Portal(backend)
    try:
        started = time.monotonic()
        backend.load(small)
        seeded = time.monotonic() - started
        say(f"{label}: {small.records:,} records, {small.event_rows:,} events in {seeded:.1f} s")
        say(f"{label}: roll-up recounted in {portal.rebuild_rollup():.1f} s")
        portal.reset_pool()
        portal.sign_in()
        small_measure = run_size(portal, small.records, small.samples, f"{label} 10k")

        started = time.monotonic()
        backend.load(grow)
        grown = time.monotonic() - started
        total = small.records + grow.records
        say(
            f"{label}: grew by {grow.records:,} records and {grow.event_rows:,} events "
            f"to {total:,} in {grown:.1f} s"
        )
        say(f"{label}: roll-up recounted in {portal.rebuild_rollup():.1f} s")
        portal.reset_pool()
        large_measure = run_size(portal, total, small.samples + grow.samples, f"{label} large")
        since = (datetime.now(UTC) - timedelta(days=FILTER_DAYS)).date().isoformat()
        slowest_statements(
            portal,
            {
                "dashboard": "/admin",
                "filtered": f"/admin/records?state=failed&created_from={since}",
                "deep": large_measure.deep_path,
                "record": f"/admin/records/{grow.samples[len(grow.samples) // 2][0]}",
            },
            f"{label} large",
        )
        return Result(backend.name, small_measure, large_measure, seeded + grown)
    finally:
        portal.close()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if ROWS <= SMALL:
        raise SystemExit(f"BENCH_DASHBOARD_ROWS must be above {SMALL}")
    # Production checks apply: real secrets, made for this run.
    os.environ.update(
        PORTAL_SECRET_KEY=secrets.token_urlsafe(48),
        PORTAL_AUTHENTICATE_API_KEY="bench-" + secrets.token_hex(16),
        PORTAL_WEBHOOK_SECRET=secrets.token_urlsafe(32),
    )
    print(
        f"# dashboard: {SMALL:,} then {ROWS:,} records (the *_1m_ms figures); in-process "
        f"Flask test client, production config, signed-in admin; median of {TIMED} requests "
        f"after {WARMUP} warm-up ({SLOW_TIMED} when a page takes over {SLOW_MS:.0f} ms)",
        flush=True,
    )
    begun = time.monotonic()
    lines: list[str] = []
    results: list[Result] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="portal-bench-dash-") as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        generator = Generator(datetime.now(UTC))
        small = generator.segment(folder, "small", SMALL)
        grow = generator.segment(folder, "grow", ROWS - SMALL)
        say(f"dashboard: generated the data in {time.monotonic() - started:.1f} s")
        backends: list[tuple[str, Callable[[], Any]]] = [
            ("sqlite", lambda: nullcontext(f"sqlite:///{folder / 'dashboard.sqlite3'}")),
            ("postgres", postgres_database),
        ]
        for name, database in backends:
            with database() as url:
                if url is None:
                    where = make_url(run.POSTGRES_URL)  # str() hides any password
                    lines.append(f"dashboard_{name} skipped: PostgreSQL unreachable at {where}")
                    continue
                backend: Backend = SQLite(url) if name == "sqlite" else Postgres(url)
                result = bench_backend(backend, small, grow)
                results.append(result)
                lines.append(result.line())
                for problem in result.problems:
                    failed = True
                    say(f"  PROBLEM {problem}")
            if name == "sqlite":  # free its disk space before PostgreSQL's run
                for suffix in ("", "-wal", "-shm"):
                    (folder / f"dashboard.sqlite3{suffix}").unlink(missing_ok=True)
    for result in results:
        slow = [p for p in PAGES if result.large.medians[p] > AIM_MS]
        print(
            f"# {result.name}: seeded in {result.seed_seconds:.1f} s; pages over "
            f"{AIM_MS:.0f} ms at {ROWS:,}: {', '.join(slow) or 'none'}; ratio aim "
            f"{AIM_RATIO:.0f} {'met' if result.ratio() < AIM_RATIO else 'missed'}"
        )
    print(f"# dashboard benchmark took {time.monotonic() - begun:.0f} s")
    for line in lines:
        print(line)
    for result in results:
        print(f"dashboard_{result.name}_ms={result.slowest():.1f}")
    for name in ("sqlite", "postgres"):
        if name not in {r.name for r in results}:
            print(f"dashboard_{name}_ms skipped: no {name} measure")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the benchmark database was dropped", file=sys.stderr)
        sys.exit(130)
