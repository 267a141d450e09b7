"""Deliveries in any order, any number of times, end where the distinct events in order do."""

import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from portal import store
from portal.config import status_map
from portal.extensions import db
from portal.models import STATE_RANK, TERMINAL_STATES, WebhookEvent
from tests.conftest import make_app
from tests.test_integration import complete_medallion, onboard, uuid_behind

STATUSES = ["started", "review", "verified", "failed", "abandoned", "something_new"]
BASE = datetime(2026, 3, 14, 16, 0, tzinfo=UTC)
counter = itertools.count()


def expected_state(events, table):
    """The specification, written out plainly: apply distinct events in eventDate order
    (ties by rank), and never let a non-terminal state replace a decision."""
    state = "pending"
    ranked = sorted(
        events, key=lambda e: (e.event_date, STATE_RANK[store.state_for(e.raw_status, table)])
    )
    for event in ranked:
        new = store.state_for(event.raw_status, table)
        if state in TERMINAL_STATES and new not in TERMINAL_STATES:
            continue
        state = new
    return state


event_specs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # which UUID
        st.sampled_from(STATUSES),
        st.integers(min_value=0, max_value=3),  # minutes after BASE: small, so ties happen
    ),
    min_size=1,
    max_size=8,
)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_any_delivery_order_ends_in_the_same_states(request, backend):
    app = make_app(request.getfixturevalue(f"{backend}_url"))
    table = status_map(app.config)

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(specs=event_specs, data=st.data())
    def check(specs, data):
        run = next(counter)
        uuids = [str(uuid.uuid4()) for _ in range(3)]
        events = [
            store.IncomingEvent(
                event_id=f"run{run}-evt{n}",
                event_type=store.STATUS_EVENT,
                user_access_code=uuids[who],
                raw_status=status,
                verification_method="governmentId",
                event_date=BASE + timedelta(minutes=minute),
            )
            for n, (who, status, minute) in enumerate(specs)
        ]
        repeats = data.draw(st.lists(st.sampled_from(events), max_size=6), label="repeats")
        deliveries = data.draw(st.permutations(events + repeats), label="deliveries")
        with app.app_context():
            for n, code in enumerate(uuids):
                store.add_verification(code, f"run{run}-key{n}")
            outcomes = [store.record_event(event, table) for event in deliveries]
            assert outcomes.count("recorded") == len(events)
            assert outcomes.count("duplicate") == len(repeats)
            for code in uuids:
                mine = [e for e in events if e.user_access_code == code]
                assert store.get_verification(code).state == expected_state(mine, table)

    try:
        check()
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def sandbox_config():
    return {"WEBHOOK_BACKOFF": 0.05, "WEBHOOK_DUPLICATES": True, "WEBHOOK_REORDER": True}


def test_sandbox_duplicates_and_reordering_change_nothing_end_to_end(live):
    with requests.Session() as session:
        link, _ = onboard(live, session)
        # The started event is held back and sent after the outcome, each twice.
        session.get(link, timeout=5)
        complete_medallion(session, link, "verified")
    user_access_code = uuid_behind(live, link)
    assert live.wait_for_state(user_access_code, "verified") == "verified"

    deadline = time.monotonic() + 15
    while True:
        deliveries = [
            d
            for d in live.sandbox_json("/_sandbox/deliveries")["deliveries"]
            if d["userAccessCode"] == user_access_code
        ]
        finished = len(deliveries) == 4 and all(d["state"] == "delivered" for d in deliveries)
        if finished or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [d["status"] for d in deliveries] == ["verified", "verified", "started", "started"]
    assert all(d["state"] == "delivered" for d in deliveries)
    with live.portal_app.app_context():
        rows = db.session.scalar(
            select(func.count())
            .select_from(WebhookEvent)
            .where(WebhookEvent.user_access_code == user_access_code)
        )
        record = store.get_verification(user_access_code)
    assert rows == 2
    assert (record.state, record.raw_status) == ("verified", "verified")
