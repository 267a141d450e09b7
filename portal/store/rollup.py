"""The dashboard's daily roll-up, kept in step with every write that moves a record.

Two small tables (models DailyCount, DecisionTimeCount; migration 0006) hold, per UTC day,
what the dashboard shows: records created per current state (and how many got a link),
decisions per state, and a histogram of times to decision. Each write that creates, moves or
deletes a record calls one function here inside its own transaction, which adds the difference
with an upsert (INSERT ... ON CONFLICT DO UPDATE SET n = n + delta). The counters are exact:
an upsert is atomic, and every writer locks the record it moves before reading it, so no two
writers count the same change. Today's rows are hot (every write of the day updates them, one
writer at a time); at this portal's rates, tens of webhooks a second at most, that queue is
short.

`rebuild` recomputes everything from the records, for repair (`flask dashboard rebuild`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from typing import Any, Protocol

from sqlalchemy import Table, delete, insert, select, text

from portal.extensions import db
from portal.models import TERMINAL_STATES, DailyCount, DecisionTimeCount, Verification
from portal.store.connections import UPSERT_INSERTS

# Each histogram bucket is this much wider than the one before. A bucket's geometric middle
# is then within sqrt(1.05) - 1, about 2.5%, of every time in it.
BUCKET_RATIO = 1.05
MEDIAN_PRECISION = math.sqrt(BUCKET_RATIO) - 1
LOG_RATIO = math.log(BUCKET_RATIO)
DAY_COLUMNS = ("created", "linked", "decided")
REBUILD_BATCH = 10_000


def decision_bucket(seconds: float) -> int:
    """Return the histogram bucket of a time to decision.

    Bucket 0 holds everything under a second (a provider clock behind ours can even make it
    negative); bucket b >= 1 holds [BUCKET_RATIO ** (b - 1), BUCKET_RATIO ** b) seconds.
    """
    if seconds < 1:
        return 0
    return 1 + int(math.log(seconds) / LOG_RATIO)


def bucket_middle(bucket: int) -> float:
    """Return the seconds a bucket stands for: its geometric middle (0.5 for bucket 0)."""
    if bucket <= 0:
        return 0.5
    return float(BUCKET_RATIO ** (bucket - 0.5))


class RecordLike(Protocol):
    """The four columns of a record that the roll-up counts (a model or a result row)."""

    @property
    def created_at(self) -> datetime: ...
    @property
    def state(self) -> str: ...
    @property
    def link_issued_at(self) -> datetime | None: ...
    @property
    def decided_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class Mark:
    """Where one record sits in the roll-up: the counters it adds one to."""

    created_day: date
    state: str
    linked: bool
    decided_day: date | None
    bucket: int | None

    @classmethod
    def of(cls, record: RecordLike) -> Mark:
        """Return the record's place; times are UTC (aware, or naive in a migration)."""
        decided = record.decided_at if record.state in TERMINAL_STATES else None
        return cls(
            created_day=record.created_at.date(),
            state=record.state,
            linked=record.link_issued_at is not None,
            decided_day=None if decided is None else decided.date(),
            bucket=None
            if decided is None
            else decision_bucket((decided - record.created_at).total_seconds()),
        )


@dataclass
class Tally:
    """Counter changes: per (day, state, column) and per (day, bucket)."""

    days: Counter[tuple[date, str, str]] = field(default_factory=Counter)
    times: Counter[tuple[date, int]] = field(default_factory=Counter)
    records: int = 0

    def add(self, mark: Mark, sign: int = 1) -> None:
        """Add (or with sign=-1, take away) one record at `mark`."""
        self.days[(mark.created_day, mark.state, "created")] += sign
        if mark.linked:
            self.days[(mark.created_day, mark.state, "linked")] += sign
        if mark.decided_day is not None and mark.bucket is not None:
            self.days[(mark.decided_day, mark.state, "decided")] += sign
            self.times[(mark.decided_day, mark.bucket)] += sign
        self.records += sign

    def day_rows(self) -> list[dict[str, Any]]:
        """Return the non-zero changes as daily_counts rows, in key order."""
        rows: dict[tuple[date, str], dict[str, Any]] = {}
        for (day, state, column), n in self.days.items():
            if n:
                row = rows.setdefault((day, state), dict.fromkeys(DAY_COLUMNS, 0))
                row[column] = n
        return [{"day": day, "state": state, **rows[day, state]} for day, state in sorted(rows)]

    def time_rows(self) -> list[dict[str, Any]]:
        """Return the non-zero changes as decision_time_counts rows, in key order."""
        return [
            {"day": day, "bucket": bucket, "decided": n}
            for (day, bucket), n in sorted(self.times.items())
            if n
        ]


def tally(rows: Iterable[tuple[datetime, str, datetime | None, datetime | None]]) -> Tally:
    """Count records from scratch: rows of (created_at, state, link_issued_at, decided_at).

    A pure function, which the migration's backfill uses too. It counts as Mark.of and
    Tally.add do, unrolled: a million rows go through it in a few seconds.
    """
    days: Counter[tuple[date, str, str]] = Counter()
    times: Counter[tuple[date, int]] = Counter()
    count = 0
    for created_at, state, link_issued_at, decided_at in rows:
        count += 1
        day = created_at.date()
        days[(day, state, "created")] += 1
        if link_issued_at is not None:
            days[(day, state, "linked")] += 1
        if decided_at is not None and state in TERMINAL_STATES:
            decided_day = decided_at.date()
            days[(decided_day, state, "decided")] += 1
            seconds = (decided_at - created_at).total_seconds()
            times[(decided_day, decision_bucket(seconds))] += 1
    return Tally(days, times, count)


def added(record: RecordLike) -> None:
    """Count a record that was just created, in the caller's transaction."""
    change = Tally()
    change.add(Mark.of(record))
    _write(change)


@contextmanager
def tracking(record: RecordLike) -> Iterator[None]:
    """Count whatever the block changes about `record`, in the caller's transaction.

    The caller must hold the record's row lock (SELECT ... FOR UPDATE) from before the block
    until its commit, so that no other writer moves the same record in between.
    """
    before = Mark.of(record)
    yield
    after = Mark.of(record)
    if after != before:
        change = Tally()
        change.add(before, -1)
        change.add(after)
        _write(change)


def forget(records: Iterable[RecordLike]) -> None:
    """Take deleted records out of the roll-up, in the transaction that deletes them.

    Pass the rows the DELETE returned (DELETE ... RETURNING created_at, state,
    link_issued_at, decided_at), so the values taken away are the ones that were counted.
    """
    change = Tally()
    for record in records:
        change.add(Mark.of(record), -1)
    _write(change)


def _write(change: Tally) -> None:
    # Rows in key order: two writers touching the same rows lock them in the same order,
    # so they queue instead of deadlocking.
    _upsert(DailyCount.__table__, ("day", "state"), change.day_rows())
    _upsert(DecisionTimeCount.__table__, ("day", "bucket"), change.time_rows())


def _upsert(table: Any, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    statement = _upsert_statement(db.session.get_bind().dialect.name, table, keys)
    # One statement with the rows as parameters (executed in their key order), so its SQL
    # is compiled once per process rather than once per write.
    db.session.execute(statement, rows)


@cache
def _upsert_statement(dialect: str, table: Any, keys: tuple[str, ...]) -> Any:
    """Return INSERT ... ON CONFLICT (keys) DO UPDATE adding each counter column."""
    statement = UPSERT_INSERTS[dialect](table)
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={
            column.name: column + statement.excluded[column.name]
            for column in table.c
            if column.name not in keys
        },
    )


def rebuild() -> int:
    """Recompute the roll-up from the records and commit; return how many it counted.

    Safe while the portal serves: the roll-up tables are locked first (on PostgreSQL by LOCK
    TABLE, on SQLite by the DELETE taking the write lock), so a writer either committed
    before the records are read, or waits and adds its change after this commits.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("LOCK TABLE daily_counts, decision_time_counts IN EXCLUSIVE MODE"))
    db.session.execute(delete(DailyCount))
    db.session.execute(delete(DecisionTimeCount))
    columns = select(
        Verification.created_at,
        Verification.state,
        Verification.link_issued_at,
        Verification.decided_at,
    )
    counted = tally(db.session.execute(columns.execution_options(yield_per=REBUILD_BATCH)))
    insert_tally(counted, DailyCount.__table__, DecisionTimeCount.__table__, db.session.execute)
    db.session.commit()
    return counted.records


def insert_tally(counted: Tally, days: Table, times: Table, execute: Any) -> None:
    """Insert a from-scratch tally into empty roll-up tables, REBUILD_BATCH rows a statement."""
    for table, rows in ((days, counted.day_rows()), (times, counted.time_rows())):
        for start in range(0, len(rows), REBUILD_BATCH):
            execute(insert(table), rows[start : start + REBUILD_BATCH])
