"""Dashboard summary reads: counts per state, the funnel, the median time to decision, the chart.

All of them read the daily roll-up (store/rollup.py), a few rows per day, never the records
themselves, except the exact median of a range with few decisions. A range is whole UTC days,
first to last, both included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Integer, case, extract, func, select
from sqlalchemy.sql.elements import ColumnElement

from portal.extensions import db
from portal.models import (
    FAILED,
    STATES,
    TERMINAL_STATES,
    VERIFIED,
    DailyCount,
    DecisionTimeCount,
    Verification,
)
from portal.store import rollup

DECIDED = sorted(TERMINAL_STATES)
# Up to this many decisions in a range, the median is computed exactly from the records (a
# sort of at most this many index entries); above it, from the roll-up's histogram.
EXACT_MEDIAN_MAX = 1000


@dataclass(frozen=True)
class FunnelStage:
    """One funnel step; a share is None when the step it is measured against is empty."""

    label: str
    count: int
    of_previous: float | None
    of_created: float | None


@dataclass(frozen=True)
class Funnel:
    """How many records of one creation range reached each step."""

    created: int
    link_issued: int
    decided: int
    verified: int

    def stages(self) -> list[FunnelStage]:
        """Return each step with its share of the step before and of all created records."""
        steps = [
            ("Created", self.created),
            ("Link issued", self.link_issued),
            ("Decided", self.decided),
            ("Verified", self.verified),
        ]
        stages, previous = [], None
        for label, count in steps:
            stages.append(
                FunnelStage(label, count, _share(count, previous), _share(count, self.created))
            )
            previous = count
        return stages


@dataclass(frozen=True)
class DayCounts:
    """One UTC day of the chart: submissions that day, and decisions made that day."""

    day: date
    submitted: int
    verified: int
    failed: int


def _share(part: int, whole: int | None) -> float | None:
    return None if not whole else part / whole


@dataclass(frozen=True)
class MedianTime:
    """A median time to decision; when not `exact`, within rollup.MEDIAN_PRECISION of it."""

    seconds: float
    exact: bool
    precision: float = 0.0


def _sum(value: ColumnElement[int]) -> ColumnElement[int]:
    return func.coalesce(func.sum(value), 0, type_=Integer)


def _when(condition: ColumnElement[bool], value: ColumnElement[int]) -> ColumnElement[int]:
    return _sum(case((condition, value), else_=0))


def _days(first: date, last: date) -> ColumnElement[bool]:
    return DailyCount.day.between(first, last)


def count_by_state() -> dict[str, int]:
    """Return how many records are in each state now, zeros included, in STATES order."""
    rows = db.session.execute(
        select(DailyCount.state, _sum(DailyCount.created)).group_by(DailyCount.state)
    )
    found = {state: int(total) for state, total in rows}
    return {state: found.get(state, 0) for state in STATES}


def funnel(first: date, last: date) -> Funnel:
    """Follow the records created on days first..last through link, decision, verification."""
    created, state = DailyCount.created, DailyCount.state
    row = db.session.execute(
        select(
            _sum(created),
            _sum(DailyCount.linked),
            _when(state.in_(DECIDED), created),
            _when(state == VERIFIED, created),
        ).where(_days(first, last))
    ).one()
    return Funnel(*(int(value) for value in row))


def daily_series(first: date, last: date) -> list[DayCounts]:
    """Return submissions (by creation day) and outcomes (by decision day) per day, zeros too."""
    decided, state = DailyCount.decided, DailyCount.state
    rows = db.session.execute(
        select(
            DailyCount.day,
            _sum(DailyCount.created),
            _when(state == VERIFIED, decided),
            _when(state == FAILED, decided),
        )
        .where(_days(first, last))
        .group_by(DailyCount.day)
    )
    found = {day: DayCounts(day, int(s), int(v), int(f)) for day, s, v, f in rows}
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [found.get(day, DayCounts(day, 0, 0, 0)) for day in days]


def median_decision_time(first: date, last: date) -> MedianTime | None:
    """Return the median time from creation to decision of the records decided first..last.

    None when nothing was decided. Exact up to EXACT_MEDIAN_MAX decisions; above that it is
    read from the roll-up's log-spaced histogram, within rollup.MEDIAN_PRECISION.
    """
    histogram = db.session.execute(
        select(DecisionTimeCount.bucket, _sum(DecisionTimeCount.decided))
        .where(DecisionTimeCount.day.between(first, last))
        .group_by(DecisionTimeCount.bucket)
        .order_by(DecisionTimeCount.bucket)
    ).all()
    total = sum(int(n) for _, n in histogram)
    if total <= 0:
        return None
    if total <= EXACT_MEDIAN_MAX:
        exact = _exact_median(_midnight(first), _midnight(last + timedelta(days=1)))
        return None if exact is None else MedianTime(exact, exact=True)
    middle = [_bucket_at(histogram, rank) for rank in {(total - 1) // 2, total // 2}]
    seconds = sum(rollup.bucket_middle(bucket) for bucket in middle) / len(middle)
    return MedianTime(seconds, False, rollup.MEDIAN_PRECISION)


def _bucket_at(histogram: list[Any], rank: int) -> int:
    """Return the bucket holding the `rank`-th shortest time (0-based)."""
    seen = 0
    for bucket, count in histogram:
        seen += int(count)
        if rank < seen:
            return int(bucket)
    return int(histogram[-1][0])


def _exact_median(since: datetime, until: datetime) -> float | None:
    """Sort the range's decision times and return the middle one, or the mean of the two.

    None when there are none (a decision can be revised between the roll-up's read and this
    one). PostgreSQL computes it; SQLite, which has no percentile function, sorts the
    durations itself and hands back only the middle one or two.
    """
    in_range = (
        Verification.decided_at >= since,
        Verification.decided_at < until,
        Verification.state.in_(DECIDED),
    )
    if db.session.get_bind().dialect.name == "postgresql":
        seconds = extract("epoch", Verification.decided_at - Verification.created_at)
        value = db.session.scalar(
            select(func.percentile_cont(0.5).within_group(seconds)).where(*in_range)
        )
        return None if value is None else float(value)
    seconds = (
        func.julianday(Verification.decided_at) - func.julianday(Verification.created_at)
    ) * 86400.0
    total = db.session.scalar(select(func.count()).select_from(Verification).where(*in_range))
    if not total:
        return None
    middle = db.session.scalars(
        select(seconds)
        .where(*in_range)
        .order_by(seconds)
        .offset((total - 1) // 2)
        .limit(2 - total % 2)
    ).all()
    return sum(middle) / len(middle)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
