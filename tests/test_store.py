import hashlib
import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from portal import store
from portal.config import DEFAULT_STATUS_MAP, status_map
from portal.extensions import db
from portal.models import Submission, Verification, WebhookEvent
from portal.store import events
from tests.conftest import TEST_WEBHOOK_SECRET, make_app

UAC = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
OTHER_UAC = "0b7c1d2e-3f40-4a5b-8c6d-7e8f9a0b1c2d"
T1 = datetime(2025, 3, 14, 16, 5, 9, 412000, tzinfo=UTC)
T2 = T1 + timedelta(minutes=3)
T3 = T1 + timedelta(minutes=9)
HOOK = f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}"


def incoming(event_id, status="verified", at=T1, uac=UAC, event_type=store.STATUS_EVENT):
    return store.IncomingEvent(
        event_id=event_id,
        event_type=event_type,
        user_access_code=uac,
        raw_status=status,
        verification_method="gov_id" if status is not None else None,
        event_date=at,
    )


def record(*events):
    return [store.record_event(event, DEFAULT_STATUS_MAP) for event in events]


def fresh(uac=UAC):
    """Read the record as the database has it, not as the session remembers it."""
    db.session.expire_all()
    return store.get_verification(uac)


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def stored_event(event_id):
    db.session.expire_all()
    return db.session.scalar(select(WebhookEvent).where(WebhookEvent.event_id == event_id))


# --- submit keys -------------------------------------------------------------------------


def test_claim_submission_is_true_once_then_false_for_the_same_key(store_app):
    assert store.claim_submission("key-a") is True
    assert store.claim_submission("key-a") is False
    assert store.claim_submission("key-b") is True
    assert count(Submission) == 2


def test_release_submission_frees_an_unfinished_claim(store_app):
    store.claim_submission("key-a")

    store.release_submission("key-a")

    assert count(Submission) == 0
    assert store.claim_submission("key-a") is True


def test_release_submission_keeps_a_claim_that_already_has_a_uuid(store_app):
    store.claim_submission("key-a")
    store.add_verification(UAC, "key-a")

    store.release_submission("key-a")

    assert store.claim_submission("key-a") is False
    assert store.wait_for_submission("key-a", timeout=0) == UAC


def test_add_verification_ties_the_key_to_the_uuid_when_claimed(store_app):
    store.claim_submission("key-a")

    store.add_verification(UAC, "key-a")

    submission = db.session.get(Submission, store.hash_submit_key("key-a"))
    assert submission.user_access_code == UAC
    assert fresh().state == "pending"
    assert count(Submission) == 1


def test_add_verification_creates_the_claim_when_none_exists(store_app):
    store.add_verification(UAC, "key-unclaimed")

    assert store.claim_submission("key-unclaimed") is False
    assert store.wait_for_submission("key-unclaimed", timeout=0) == UAC


def test_wait_for_submission_returns_the_uuid_when_stored(store_app):
    store.claim_submission("key-a")
    store.add_verification(UAC, "key-a")

    assert store.wait_for_submission("key-a", timeout=1) == UAC


def test_wait_for_submission_returns_none_after_the_timeout(store_app):
    store.claim_submission("key-a")

    started = time.monotonic()
    result = store.wait_for_submission("key-a", timeout=0.3, interval=0.05)

    assert result is None
    assert 0.3 <= time.monotonic() - started < 2


def test_wait_for_submission_sees_a_uuid_committed_by_another_request(store_app):
    store.claim_submission("key-a")

    def finish_first_request():
        with store_app.app_context():
            store.add_verification(UAC, "key-a")

    other = threading.Timer(0.2, finish_first_request)
    other.start()
    try:
        result = store.wait_for_submission("key-a", timeout=5, interval=0.05)
    finally:
        other.join()

    assert result == UAC


def test_submission_table_holds_the_sha256_of_the_key_never_the_key(store_app):
    raw_key = "raw-submit-key-Zq81"
    store.claim_submission(raw_key)
    store.add_verification(UAC, raw_key)

    rows = db.session.execute(text("SELECT * FROM submissions")).all()

    assert [row.key_hash for row in rows] == [hashlib.sha256(raw_key.encode()).hexdigest()]
    assert not any(raw_key in str(value) for row in rows for value in row)


# --- record_event ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_status", "state"),
    [
        ("verified", "verified"),
        ("failed", "failed"),
        ("review", "needs_review"),
        ("started", "in_progress"),
        ("abandoned", "expired"),
        (" Verified ", "verified"),
        ("weird_new_value", "needs_review"),
    ],
)
def test_record_event_moves_the_state_by_the_status_map(store_app, raw_status, state):
    store.add_verification(UAC, "key-a")

    outcome = store.record_event(incoming("evt-1", raw_status), DEFAULT_STATUS_MAP)

    record = fresh()
    assert outcome == "recorded"
    assert record.state == state
    assert record.raw_status == raw_status
    assert record.verification_method == "gov_id"
    assert stored_event("evt-1").raw_status == raw_status


def test_record_event_uses_a_configured_status_table(store_app):
    store.add_verification(UAC, "key-a")

    store.record_event(incoming("evt-1", "Green"), {"green": "verified"})

    assert fresh().state == "verified"


def test_record_event_answers_duplicate_for_an_event_id_seen_before(store_app):
    store.add_verification(UAC, "key-a")
    record(incoming("evt-1", "started"))

    outcome = store.record_event(incoming("evt-1", "verified", at=T2), DEFAULT_STATUS_MAP)

    assert outcome == "duplicate"
    assert fresh().state == "in_progress"
    assert count(WebhookEvent) == 1
    assert stored_event("evt-1").raw_status == "started"


def test_record_event_keeps_an_orphan_without_creating_a_verification(store_app):
    outcome = store.record_event(incoming("evt-1", uac=OTHER_UAC), DEFAULT_STATUS_MAP)

    row = stored_event("evt-1")
    assert outcome == "orphan"
    assert row.orphan is True
    assert row.user_access_code == OTHER_UAC
    assert count(Verification) == 0
    assert count(Submission) == 0


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("USER_PII_UPDATE", None),
        ("UPLOAD_ID_ENHANCED_REVIEW_STATUS", "verified"),
        ("SOMETHING_NEW_IN_2027", "verified"),
    ],
)
def test_record_event_ignores_other_event_types_but_keeps_the_row(store_app, event_type, status):
    store.add_verification(UAC, "key-a")

    outcome = store.record_event(
        incoming("evt-1", status, event_type=event_type), DEFAULT_STATUS_MAP
    )

    row = stored_event("evt-1")
    assert outcome == "ignored"
    assert row.event_type == event_type
    assert row.orphan is False
    record_ = fresh()
    assert record_.state == "pending"
    assert record_.last_event_at is None


def test_record_event_ignores_a_status_event_without_a_date(store_app):
    store.add_verification(UAC, "key-a")

    outcome = store.record_event(incoming("evt-1", "verified", at=None), DEFAULT_STATUS_MAP)

    assert outcome == "ignored"
    assert fresh().state == "pending"
    assert count(WebhookEvent) == 1


@pytest.mark.parametrize(
    ("decision", "later", "state"),
    [
        ("verified", "started", "verified"),
        ("verified", "review", "verified"),
        ("verified", "abandoned", "verified"),
        ("failed", "started", "failed"),
        ("failed", "weird_new_value", "failed"),
    ],
)
def test_record_event_never_downgrades_a_decision_with_a_later_event(
    store_app, decision, later, state
):
    store.add_verification(UAC, "key-a")

    outcomes = record(incoming("evt-1", decision, at=T1), incoming("evt-2", later, at=T2))

    record_ = fresh()
    assert outcomes == ["recorded", "recorded"]
    assert record_.state == state
    assert record_.raw_status == decision
    assert record_.decided_at == T1
    assert count(WebhookEvent) == 2


@pytest.mark.parametrize(
    ("newer", "older", "state"),
    [
        ("verified", "started", "verified"),
        ("failed", "review", "failed"),
        ("abandoned", "started", "expired"),
        ("review", "started", "needs_review"),
    ],
)
def test_record_event_keeps_the_newer_event_when_an_older_one_arrives_late(
    store_app, newer, older, state
):
    store.add_verification(UAC, "key-a")

    record(incoming("evt-newer", newer, at=T2), incoming("evt-older", older, at=T1))

    record_ = fresh()
    assert record_.state == state
    assert record_.raw_status == newer
    assert record_.last_event_at == T2


@pytest.mark.parametrize(("first", "second"), [("failed", "started"), ("started", "failed")])
def test_record_event_breaks_equal_event_dates_by_rank_not_arrival(store_app, first, second):
    store.add_verification(UAC, "key-a")

    record(incoming("evt-1", first, at=T1), incoming("evt-2", second, at=T1))

    assert fresh().state == "failed"


def test_record_event_sets_last_event_at_and_decided_at(store_app):
    store.add_verification(UAC, "key-a")

    record(incoming("evt-1", "started", at=T1))
    started = fresh()
    assert (started.last_event_at, started.decided_at) == (T1, None)

    record(incoming("evt-2", "verified", at=T2))
    verified = fresh()
    assert (verified.last_event_at, verified.decided_at) == (T2, T2)
    assert verified.last_event_at.tzinfo is not None


def test_record_event_moves_only_the_record_it_names(store_app):
    store.add_verification(UAC, "key-a")
    store.add_verification(OTHER_UAC, "key-b")

    record(incoming("evt-1", "failed", uac=OTHER_UAC))

    assert fresh(UAC).state == "pending"
    assert fresh(OTHER_UAC).state == "failed"


# --- fold_events (pure) ------------------------------------------------------------------


def event(event_id, status, at, method=None):
    return WebhookEvent(
        event_id=event_id, raw_status=status, event_date=at, verification_method=method
    )


def test_fold_events_of_nothing_is_pending():
    assert store.fold_events([], DEFAULT_STATUS_MAP) == store.Folded(
        "pending", None, None, None, None
    )


def test_fold_events_gives_one_result_for_every_arrival_order():
    events = [
        event("a", "started", T1, "selfie"),
        event("b", "review", T2, "gov_id"),
        event("c", "verified", T2 + timedelta(seconds=1), "gov_id"),
        event("d", "started", T3, "selfie"),
    ]

    results = {
        store.fold_events(order, DEFAULT_STATUS_MAP) for order in itertools.permutations(events)
    }

    assert results == {
        store.Folded(
            "verified", "verified", "gov_id", T2 + timedelta(seconds=1), T2 + timedelta(seconds=1)
        )
    }


@pytest.mark.parametrize(
    ("statuses", "state"),
    [
        (("failed", "started"), "failed"),
        (("review", "started"), "needs_review"),
        (("abandoned", "started"), "expired"),
        (("verified", "review"), "verified"),
    ],
)
def test_fold_events_breaks_ties_by_rank_whatever_the_order(statuses, state):
    events = [event(f"evt-{status}", status, T1) for status in statuses]

    forward = store.fold_events(events, DEFAULT_STATUS_MAP)
    backward = store.fold_events(list(reversed(events)), DEFAULT_STATUS_MAP)

    assert forward.state == state
    assert forward == backward


def test_fold_events_gives_the_same_decision_for_a_verified_failed_tie_in_any_order():
    events = [event("a", "verified", T1), event("b", "failed", T1)]

    assert store.fold_events(events, DEFAULT_STATUS_MAP) == store.fold_events(
        list(reversed(events)), DEFAULT_STATUS_MAP
    )


def test_fold_events_lets_a_later_decision_replace_an_earlier_one():
    folded = store.fold_events(
        [event("a", "verified", T1), event("b", "failed", T2)], DEFAULT_STATUS_MAP
    )

    assert (folded.state, folded.decided_at) == ("failed", T2)


def test_fold_events_keeps_the_decision_time_when_a_later_event_is_skipped():
    folded = store.fold_events(
        [event("a", "failed", T1), event("b", "started", T2)], DEFAULT_STATUS_MAP
    )

    assert folded == store.Folded("failed", "failed", None, T1, T1)


@pytest.mark.parametrize(
    ("table", "state"),
    [
        ({"green": "verified"}, "verified"),
        ({"green": "no_such_state"}, "needs_review"),
        ({}, "needs_review"),
    ],
)
def test_fold_events_maps_through_the_given_table(table, state):
    assert store.fold_events([event("a", "GREEN", T1)], table).state == state


# --- concurrency (PostgreSQL) ------------------------------------------------------------


def at_once(count_, work):
    """Run work(i) on `count_` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count_)
    results = [None] * count_

    def run(index):
        try:
            barrier.wait(timeout=10)
            results[index] = work(index)
        except Exception as exc:  # reported by the test, not lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count_)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.fixture
def pg_app(postgres_url):
    app = make_app(postgres_url)
    yield app
    with app.app_context():
        db.engine.dispose()


def delivery(event_id, status, at, uac=UAC):
    return {
        "id": event_id,
        "event": store.STATUS_EVENT,
        "eventDate": at.isoformat().replace("+00:00", "Z"),
        "order": {"userAccessCode": uac, "status": status, "verificationMethod": "gov_id"},
    }


@pytest.mark.postgres
@pytest.mark.parametrize(("known", "first_outcome"), [(True, "recorded"), (False, "orphan")])
def test_record_event_stores_one_row_when_8_threads_post_the_same_event(
    pg_app, known, first_outcome
):
    if known:
        with pg_app.app_context():
            store.add_verification(UAC, "key-a")
    body = delivery("evt-same", "verified", T1)

    def post(_):
        response = pg_app.test_client().post(HOOK, json=body)
        return response.status_code, response.get_json()

    results = at_once(8, post)

    assert sorted(results, key=str) == sorted(
        [(200, {"outcome": first_outcome})] + [(200, {"outcome": "duplicate"})] * 7, key=str
    )
    with pg_app.app_context():
        assert count(WebhookEvent) == 1
        assert count(Verification) == (1 if known else 0)
        if known:
            assert fresh().state == "verified"


@pytest.mark.postgres
def test_record_event_folds_two_events_posted_at_once_like_one_after_the_other(pg_app):
    uuids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(6)]
    with pg_app.app_context():
        for n, uac in enumerate(uuids):
            store.add_verification(uac, f"key-{n}")
    # If the two folds did not wait for each other, the later "started" could win.
    pairs = [
        [
            incoming(f"{uac}-a", "verified", at=T1, uac=uac),
            incoming(f"{uac}-b", "started", at=T2, uac=uac),
        ]
        for uac in uuids
    ]

    for pair in pairs:

        def apply(index, pair=pair):
            with pg_app.app_context():
                return store.record_event(pair[index], DEFAULT_STATUS_MAP)

        assert at_once(2, apply) == ["recorded", "recorded"]

    with pg_app.app_context():
        for uac in uuids:
            record_ = fresh(uac)
            events = store.list_events(uac)
            assert len(events) == 2
            sequential = store.fold_events(events, DEFAULT_STATUS_MAP)
            assert (record_.state, record_.raw_status, record_.decided_at) == (
                sequential.state,
                sequential.raw_status,
                sequential.decided_at,
            )
            assert record_.state == "verified"


def test_record_event_sees_an_event_committed_while_it_was_starting(database_url, monkeypatch):
    """Another delivery for the same UUID commits between this one's first look and its write:
    the stored state must still equal the replay of every event."""
    app = make_app(database_url)
    table = status_map(app.config)
    uac = "5d0c1a2e-7a4b-4c1d-9e8f-0a1b2c3d4e5f"

    def event(event_id, status, day):
        return store.IncomingEvent(
            event_id,
            store.STATUS_EVENT,
            uac,
            status,
            "governmentId",
            datetime(2026, 5, day, tzinfo=UTC),
        )

    real_insert = events._insert_event

    def interleave_then_insert(connection, incoming):
        monkeypatch.setattr(events, "_insert_event", real_insert)
        with app.app_context():  # another request, with its own session and connection
            assert store.record_event(event("a-review", "review", 3), table) == "recorded"
        return real_insert(connection, incoming)

    with app.app_context():
        store.add_verification(uac, "key-interleave")
        store.record_event(event("first-started", "started", 1), table)
        monkeypatch.setattr(events, "_insert_event", interleave_then_insert)
        assert store.record_event(event("b-started", "started", 5), table) == "recorded"
        db.session.expire_all()
        record = store.get_verification(uac)
        replay = store.fold_events(store.list_events(uac), table)
        assert (record.state, record.raw_status) == (replay.state, replay.raw_status)
        assert (record.state, record.raw_status) == ("in_progress", "started")
    with app.app_context():
        db.engine.dispose()
