"""The dashboard roll-up equals a count from scratch, whatever the store does, in any order."""

import itertools
import math
import statistics
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from portal import store
from portal.config import status_map
from portal.extensions import db
from portal.models import (
    FAILED,
    STATES,
    TERMINAL_STATES,
    VERIFIED,
    DailyCount,
    DecisionTimeCount,
    Submission,
    Verification,
    WebhookEvent,
)
from portal.store import dashboard as dashboard_store
from portal.store import rollup
from portal.store.dashboard import DayCounts, Funnel
from tests.conftest import make_app
from tests.test_store import at_once

BASE = datetime(2026, 3, 14, 22, 0, tzinfo=UTC)  # late in the day: decisions cross midnight
STATUSES = ["started", "in_progress", "review", "verified", "failed", "abandoned", "odd"]
FIRST, LAST = date(2026, 3, 12), date(2026, 3, 20)
counter = itertools.count()


class Clock:
    """Stands in for store.utcnow, so records are created on chosen days."""

    def __init__(self):
        self.now = BASE

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(store, "utcnow", clock)
    return clock


def rollup_rows():
    """The roll-up's non-zero counters, as plain dicts."""
    days = {
        (row.day, row.state): (row.created, row.linked, row.decided)
        for row in db.session.scalars(select(DailyCount))
        if (row.created, row.linked, row.decided) != (0, 0, 0)
    }
    times = {
        (row.day, row.bucket): row.decided
        for row in db.session.scalars(select(DecisionTimeCount))
        if row.decided
    }
    return days, times


def expected_dashboard(first, last):
    """What the dashboard should show, worked out from the records alone."""
    records = db.session.scalars(select(Verification)).all()
    created = [r for r in records if first <= r.created_at.date() <= last]
    decided = [
        r
        for r in records
        if r.state in TERMINAL_STATES
        and r.decided_at is not None
        and first <= r.decided_at.date() <= last
    ]
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    times = [(r.decided_at - r.created_at).total_seconds() for r in decided]
    return {
        "counts": {state: sum(r.state == state for r in records) for state in STATES},
        "funnel": Funnel(
            len(created),
            sum(r.link_issued_at is not None for r in created),
            sum(r.state in TERMINAL_STATES for r in created),
            sum(r.state == VERIFIED for r in created),
        ),
        "series": [
            DayCounts(
                day,
                sum(r.created_at.date() == day for r in created),
                sum(r.decided_at.date() == day for r in decided if r.state == VERIFIED),
                sum(r.decided_at.date() == day for r in decided if r.state == FAILED),
            )
            for day in days
        ],
        "median": statistics.median(times) if times else None,
    }


def shown_dashboard(first, last):
    median = dashboard_store.median_decision_time(first, last)
    return {
        "counts": dashboard_store.count_by_state(),
        "funnel": dashboard_store.funnel(first, last),
        "series": dashboard_store.daily_series(first, last),
        "median": None if median is None else median.seconds,
    }


def empty_tables():
    for model in (WebhookEvent, Submission, Verification, DailyCount, DecisionTimeCount):
        db.session.execute(delete(model))
    db.session.commit()


operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 3), st.integers(-2, 2)),
        st.tuples(st.just("link"), st.integers(0, 3), st.integers(-2, 3)),
        st.tuples(
            st.sampled_from(["webhook", "reconciled"]),
            st.integers(0, 4),  # 4: a UUID the portal never created (an orphan)
            st.sampled_from(STATUSES),
            st.integers(-3 * 24, 4 * 24),  # hours after BASE: before creation, ties, days on
        ),
        st.tuples(st.just("again"), st.integers(0, 20)),
    ),
    min_size=1,
    max_size=25,
)


def run_operations(ops, table, clock):
    """Apply the operations through the store functions the views and webhooks call."""
    run = next(counter)
    uuids = [f"00000000-0000-4000-8000-{run:06d}{n:06d}" for n in range(5)]
    sent = []
    for op in ops:
        kind, who = op[0], op[1]
        if kind == "create" and store.get_verification(uuids[who]) is None:
            clock.now = BASE + timedelta(days=op[2], minutes=who)
            store.add_verification(uuids[who], f"run{run}-key{who}")
        elif kind == "link":
            clock.now = BASE + timedelta(days=op[2], hours=1)
            store.mark_link_issued(uuids[who], "token")
        elif kind in ("webhook", "reconciled"):
            event = store.IncomingEvent(
                event_id=f"run{run}-{len(sent)}",
                event_type=store.STATUS_EVENT if kind == "webhook" else store.RECONCILED_EVENT,
                user_access_code=uuids[who],
                raw_status=op[2],
                verification_method="governmentId",
                event_date=BASE + timedelta(hours=op[3]),
            )
            sent.append(event)
            store.record_event(event, table)
        elif kind == "again" and sent:
            store.record_event(sent[who % len(sent)], table)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_rollup_equals_a_recount_after_any_sequence_of_store_writes(request, backend, clock):
    app = make_app(request.getfixturevalue(f"{backend}_url"))
    table = status_map(app.config)

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(ops=operations)
    def check(ops):
        with app.app_context():
            empty_tables()
            run_operations(ops, table, clock)
            kept = rollup_rows()
            shown = shown_dashboard(FIRST, LAST)

            assert rollup.rebuild() == len(db.session.scalars(select(Verification)).all())
            assert rollup_rows() == kept
            expected = expected_dashboard(FIRST, LAST)
            assert {k: v for k, v in shown.items() if k != "median"} == {
                k: v for k, v in expected.items() if k != "median"
            }
            assert shown["median"] == pytest.approx(expected["median"])

    try:
        check()
    finally:
        with app.app_context():
            db.engine.dispose()


def test_median_reads_the_histogram_within_its_precision_above_the_exact_limit(
    store_app, clock, monkeypatch
):
    table = status_map(store_app.config)
    # Decision times spread from a second to about a week.
    seconds = [math.exp(n * 0.37) for n in range(37)]
    for n, wait in enumerate(seconds):
        uac = f"00000000-0000-4000-8000-{n:012d}"
        clock.now = BASE + timedelta(minutes=n)
        store.add_verification(uac, f"key-{n}")
        decided = clock.now + timedelta(seconds=wait)
        event = store.IncomingEvent(f"e{n}", store.STATUS_EVENT, uac, "verified", "m", decided)
        store.record_event(event, table)
    first, last = BASE.date(), BASE.date() + timedelta(days=10)
    exact = dashboard_store.median_decision_time(first, last)
    monkeypatch.setattr(dashboard_store, "EXACT_MEDIAN_MAX", 10)

    estimate = dashboard_store.median_decision_time(first, last)

    assert exact.exact and exact.seconds == pytest.approx(statistics.median(seconds))
    assert not estimate.exact and estimate.precision == pytest.approx(0.0247, abs=1e-4)
    assert abs(estimate.seconds - exact.seconds) <= estimate.precision * exact.seconds


@given(st.floats(min_value=1, max_value=10**9))
def test_decision_bucket_middle_is_within_the_stated_precision(seconds):
    middle = rollup.bucket_middle(rollup.decision_bucket(seconds))

    assert abs(middle - seconds) <= rollup.MEDIAN_PRECISION * seconds * (1 + 1e-9)


@pytest.mark.parametrize(("seconds", "bucket"), [(-30, 0), (0, 0), (0.99, 0), (1, 1), (1.06, 2)])
def test_decision_bucket_puts_under_a_second_first_then_steps_by_five_percent(seconds, bucket):
    assert rollup.decision_bucket(seconds) == bucket


def test_rebuild_command_recounts_records_written_behind_the_stores_back(store_app):
    db.session.add(Verification(user_access_code="a" * 36, state=VERIFIED, created_at=BASE))
    db.session.commit()
    before = dashboard_store.count_by_state()[VERIFIED]

    result = store_app.test_cli_runner().invoke(args=["dashboard", "rebuild"])

    assert result.exit_code == 0, result.output
    assert "Rebuilt the dashboard roll-up from 1 record." in result.output
    assert (before, dashboard_store.count_by_state()[VERIFIED]) == (0, 1)


@pytest.mark.postgres
def test_counts_stay_exact_when_webhooks_and_links_land_at_once(postgres_url):
    app = make_app(postgres_url)
    table = status_map(app.config)
    uuids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(12)]
    with app.app_context():
        for n, uac in enumerate(uuids):
            store.add_verification(uac, f"key-{n}")
    # Every record was created today: all writers below update the same hot rows.
    now = datetime.now(UTC)

    def work(index):
        uac = uuids[index % len(uuids)]
        with app.app_context():
            if index < len(uuids):
                store.mark_link_issued(uac, f"token-{index}")
                return None
            status = ("verified", "failed", "review", "started")[index % 4]
            event = store.IncomingEvent(f"e{index}", store.STATUS_EVENT, uac, status, "m", now)
            return store.record_event(event, table)

    results = at_once(36, work)

    assert not [r for r in results if isinstance(r, Exception)]
    with app.app_context():
        kept = rollup_rows()
        counts = dashboard_store.count_by_state()
        today = now.date()
        funnel = dashboard_store.funnel(today, today)
        rollup.rebuild()
        assert rollup_rows() == kept
        assert counts == expected_dashboard(today, today)["counts"]
        assert funnel == expected_dashboard(today, today)["funnel"]
        assert funnel.link_issued == len(uuids)
        db.engine.dispose()
