"""`flask purge` and `flask erase`: what goes, what stays, and the audit entries they leave."""

import secrets
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from portal import store
from portal.config import DEFAULT_STATUS_MAP
from portal.extensions import db
from portal.models import (
    AuditEntry,
    DailyCount,
    DecisionTimeCount,
    Submission,
    Verification,
    WebhookEvent,
    utcnow,
)
from portal.store import retention, rollup
from tests.conftest import make_app

OLD = 400  # days; older than the default retention of 365
RECENT = 2


def days_ago(days):
    return utcnow() - timedelta(days=days)


def add_record(idle_days, *, created_days=None, statuses=(), events_days=None):
    """Store a record with status events, then date it: created, last changed, events received."""
    code = str(uuid.uuid4())
    store.add_verification(code, secrets.token_urlsafe(32))
    for k, status in enumerate(statuses):
        add_event(code, status, events_days if events_days is not None else idle_days, k)
    db.session.execute(
        update(Verification)
        .where(Verification.user_access_code == code)
        .values(
            created_at=days_ago(created_days if created_days is not None else idle_days),
            updated_at=days_ago(idle_days),
        )
    )
    db.session.commit()
    return code


def add_event(code, status, received_days, k=0, event_type=store.STATUS_EVENT):
    event_id = f"evt-{uuid.uuid4()}"
    store.record_event(
        store.IncomingEvent(
            event_id=event_id,
            event_type=event_type,
            user_access_code=code,
            raw_status=status,
            verification_method="governmentId",
            event_date=days_ago(received_days) + timedelta(seconds=k),
        ),
        DEFAULT_STATUS_MAP,
    )
    db.session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.event_id == event_id)
        .values(received_at=days_ago(received_days))
    )
    db.session.commit()
    return event_id


def add_claim(days):
    """A submit key claimed `days` ago whose create-user call never finished."""
    key = secrets.token_urlsafe(32)
    store.claim_submission(key)
    db.session.execute(
        update(Submission)
        .where(Submission.key_hash == store.hash_submit_key(key))
        .values(created_at=days_ago(days))
    )
    db.session.commit()
    return store.hash_submit_key(key)


def codes():
    db.session.expire_all()
    return set(db.session.scalars(select(Verification.user_access_code)))


def event_codes():
    return set(db.session.scalars(select(WebhookEvent.user_access_code)))


def submission_codes():
    return set(db.session.scalars(select(Submission.user_access_code)))


def audit():
    return list(db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def run(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def counts_from(output):
    return dict(
        (kind, int(count))
        for kind, _, count in (line.partition(": ") for line in output.splitlines()[1:])
    )


# --- purge ---------------------------------------------------------------------------------


def test_purge_deletes_idle_records_with_their_events_and_keeps_active_ones(store_app):
    decided = add_record(OLD, statuses=("started", "verified"))
    abandoned = add_record(OLD)
    new = add_record(0)
    # Started long ago, but moved two days ago: still under way.
    under_review = add_record(RECENT, created_days=OLD, statuses=("started", "review"))
    # Nothing changed for a long time, but a webhook arrived for it yesterday.
    poked = add_record(OLD, statuses=("started",))
    add_event(poked, None, 1, event_type="USER_PII_UPDATE")

    result = run(store_app, "purge")

    assert result.exit_code == 0, result.output
    assert counts_from(result.output) == {
        "records": 2,
        "events": 2,
        "orphan events": 0,
        "submissions": 2,
    }
    assert codes() == {new, under_review, poked}
    assert event_codes() == {under_review, poked}
    assert submission_codes() == {new, under_review, poked}
    assert decided not in submission_codes() and abandoned not in submission_codes()


def test_purge_deletes_old_orphan_events_and_unfinished_claims(store_app):
    old_orphan = str(uuid.uuid4())
    new_orphan = str(uuid.uuid4())
    add_event(old_orphan, "verified", OLD)
    add_event(new_orphan, "verified", RECENT)
    old_claim = add_claim(OLD)
    new_claim = add_claim(RECENT)

    result = run(store_app, "purge")

    assert result.exit_code == 0, result.output
    assert counts_from(result.output) == {
        "records": 0,
        "events": 0,
        "orphan events": 1,
        "submissions": 1,
    }
    assert event_codes() == {new_orphan}
    keys = set(db.session.scalars(select(Submission.key_hash)))
    assert new_claim in keys and old_claim not in keys


def test_purge_works_through_more_rows_than_one_batch(store_app):
    old = {add_record(OLD, statuses=("started",)) for _ in range(5)}
    for _ in range(3):
        add_event(str(uuid.uuid4()), "started", OLD)
    kept = add_record(RECENT)

    result = run(store_app, "purge", "--batch-size", "2")

    assert result.exit_code == 0, result.output
    assert counts_from(result.output) == {
        "records": 5,
        "events": 5,
        "orphan events": 3,
        "submissions": 5,
    }
    assert codes() == {kept} and not old & event_codes()
    assert event_codes() == set()


def test_purge_dry_run_counts_and_deletes_nothing(store_app):
    old = add_record(OLD, statuses=("started", "failed"))
    add_event(str(uuid.uuid4()), "started", OLD)
    add_claim(OLD)
    kept = add_record(RECENT)

    result = run(store_app, "purge", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "nothing deleted" in result.output.splitlines()[0]
    assert counts_from(result.output) == {
        "records": 1,
        "events": 2,
        "orphan events": 1,
        "submissions": 2,
    }
    assert codes() == {old, kept}
    assert len(event_codes()) == 2
    assert audit() == []


def test_purge_age_comes_from_the_setting_and_older_than_overrides_it(database_url):
    app = make_app(database_url, RETENTION_DAYS=1000)
    with app.app_context():
        code = add_record(OLD)

        assert counts_from(run(app, "purge").output)["records"] == 0
        assert codes() == {code}
        result = run(app, "purge", "--older-than", "30")

        assert counts_from(result.output)["records"] == 1
        assert "(30 days)" in result.output
        assert codes() == set()
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("days", ["0", "-5", "soon"])
def test_purge_refuses_an_age_that_is_not_a_positive_number_of_days(store_app, days):
    code = add_record(0)

    result = run(store_app, "purge", "--older-than", days)

    assert result.exit_code == 2
    assert "--older-than" in result.output
    assert codes() == {code}


def test_purge_writes_its_counts_to_the_audit_log(store_app, monkeypatch):
    monkeypatch.setenv("LOGNAME", "ops")
    monkeypatch.setenv("USER", "ops")
    add_record(OLD, statuses=("verified",))

    run(store_app, "purge")
    run(store_app, "purge", "--by", "ada (ticket 42)")

    first, second = audit()
    assert (first.admin, first.action, first.user_access_code) == ("cli:ops", "purge", None)
    assert "1 records, 1 events, 0 orphan events, 1 submissions" in first.detail
    assert (second.admin, second.action) == ("ada (ticket 42)", "purge")
    assert "0 records" in second.detail


def test_purge_takes_deleted_records_out_of_the_dashboard_counts(store_app):
    add_record(OLD, statuses=("started", "verified"))
    add_record(OLD, statuses=("review",))
    add_record(RECENT, created_days=OLD, statuses=("started", "failed"))
    add_record(0)
    rollup.rebuild()  # the records were back-dated after the roll-up counted them

    assert run(store_app, "purge").exit_code == 0

    def snapshot():
        days = db.session.execute(select(DailyCount).order_by(DailyCount.day, DailyCount.state))
        times = db.session.execute(select(DecisionTimeCount))
        rows = [(r.day, r.state, r.created, r.linked, r.decided) for (r,) in days]
        return [row for row in rows if any(row[2:])], sorted(
            (r.day, r.bucket, r.decided) for (r,) in times if r.decided
        )

    kept = snapshot()
    rollup.rebuild()
    assert kept == snapshot()
    assert sum(row[2] for row in kept[0]) == 2


def test_purge_stops_and_audits_what_it_did_when_the_database_fails(store_app, monkeypatch):
    add_record(OLD)
    add_event(str(uuid.uuid4()), "started", OLD)

    def broken(*args):
        raise retention.SQLAlchemyError("connection lost")

    monkeypatch.setattr(retention, "_delete_batch", broken)
    with pytest.raises(retention.SQLAlchemyError):
        retention.purge(days_ago(365), "cli:ops")

    (entry,) = audit()
    assert "1 records" in entry.detail and "stopped by a database error" in entry.detail


# --- erase ---------------------------------------------------------------------------------


def test_erase_removes_one_uuid_and_writes_the_audit_entry(store_app):
    code = add_record(0, statuses=("started", "review"))
    other = add_record(0, statuses=("started",))

    result = run(store_app, "erase", code.upper(), "--by", "ada")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"Erased {code}:"
    assert counts_from(result.output) == {
        "records": 1,
        "events": 2,
        "orphan events": 0,
        "submissions": 1,
    }
    assert codes() == {other} and event_codes() == {other} and submission_codes() == {other}
    (entry,) = audit()
    assert (entry.admin, entry.action, entry.user_access_code) == ("ada", "erase", code)


def test_erase_removes_orphan_events_of_an_unknown_uuid(store_app):
    code = str(uuid.uuid4())
    add_event(code, "verified", RECENT)

    result = run(store_app, "erase", code)

    assert result.exit_code == 0, result.output
    assert counts_from(result.output)["orphan events"] == 1
    assert event_codes() == set()


def test_erase_of_a_uuid_nothing_is_held_for_fails_clearly(store_app):
    code = str(uuid.uuid4())
    add_record(0)

    result = run(store_app, "erase", code)

    assert result.exit_code == 1
    assert f"Nothing is held for {code}" in result.output
    assert audit() == []


@pytest.mark.parametrize("value", ["not-a-uuid", "", "3f6c2a9e-8d41-4b7a-9c15", "' OR 1=1 --"])
def test_erase_refuses_text_that_is_not_a_uuid(store_app, value):
    code = add_record(0)

    result = run(store_app, "erase", value)

    assert result.exit_code == 2
    assert "is not a UUID" in result.output
    assert codes() == {code} and audit() == []


def test_erase_refuses_an_empty_actor_name(store_app):
    code = add_record(0)

    result = run(store_app, "erase", code, "--by", "  ")

    assert result.exit_code == 2 and "--by" in result.output
    assert codes() == {code}
