"""Webhook events and the state machine: recording, folding and reading them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from portal.extensions import db
from portal.models import (
    NEEDS_REVIEW,
    PENDING,
    STATE_RANK,
    TERMINAL_STATES,
    Verification,
    WebhookEvent,
    utcnow,
)

STATUS_EVENT = "SELF_VERIFICATION_TRY_STATUS"
# A status the portal read back from Authenticate itself (see reconcile.py).
RECONCILED_EVENT = "PORTAL_RECONCILED_STATUS"
STATE_EVENTS = (STATUS_EVENT, RECONCILED_EVENT)
UPSERT_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True)
class IncomingEvent:
    """The allow-listed fields of one webhook delivery."""

    event_id: str
    event_type: str
    user_access_code: str | None
    raw_status: str | None
    verification_method: str | None
    event_date: datetime | None


def state_for(raw_status: str | None, table: Mapping[str, str]) -> str:
    """Map a provider status to a portal state; unknown values need a human to look."""
    if raw_status is None:
        return NEEDS_REVIEW
    state = table.get(raw_status.strip().lower(), NEEDS_REVIEW)
    return state if state in STATE_RANK else NEEDS_REVIEW


@dataclass(frozen=True)
class Folded:
    state: str
    raw_status: str | None
    verification_method: str | None
    last_event_at: datetime | None
    decided_at: datetime | None


def fold_events(events: Iterable[Any], table: Mapping[str, str]) -> Folded:
    """Replay status events in eventDate order and return where they leave the record.

    Ties on eventDate are broken by state rank, never by arrival, and a decision is never
    replaced by a non-terminal state, so any delivery order gives the same result.
    """
    keyed = [(event, state_for(event.raw_status, table)) for event in events]
    keyed.sort(
        key=lambda pair: (
            pair[0].event_date,
            STATE_RANK[pair[1]],
            pair[0].raw_status or "",
            pair[0].event_id,
        )
    )
    result = Folded(PENDING, None, None, None, None)
    for event, state in keyed:
        if result.state in TERMINAL_STATES and state not in TERMINAL_STATES:
            continue
        decided_at = event.event_date if state in TERMINAL_STATES else None
        result = Folded(
            state, event.raw_status, event.verification_method, event.event_date, decided_at
        )
    return result


def record_event(event: IncomingEvent, table: Mapping[str, str]) -> str:
    """Record a webhook event and move its record, in one transaction.

    Returns "duplicate" for an event id seen before, "orphan" for a UUID the portal never
    created, "ignored" for event types that do not change state, else "recorded".
    """
    if not _insert_event(event):
        db.session.rollback()
        return "duplicate"
    # Read (and on PostgreSQL lock) the record only after the insert: on SQLite the insert
    # holds the write lock, so this read sees every event committed before ours, and
    # concurrent deliveries for one UUID fold one after the other on both backends.
    record = None
    if event.user_access_code is not None:
        record = db.session.scalar(
            select(Verification)
            .where(Verification.user_access_code == event.user_access_code)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    if record is None:
        _mark_orphan(event.event_id)
        outcome = "orphan"
    elif event.event_type not in STATE_EVENTS or event.event_date is None:
        outcome = "ignored"
    else:
        _apply(record, event, table)
        outcome = "recorded"
    db.session.commit()
    return outcome


def _apply(record: Verification, event: IncomingEvent, table: Mapping[str, str]) -> None:
    """Move the record by one new event, replaying its history only when order demands it."""
    state = state_for(event.raw_status, table)
    if record.is_terminal and state not in TERMINAL_STATES:
        # A decision is never replaced by a non-terminal event, wherever that event sorts.
        return
    newest = record.last_event_at is None or event.event_date > record.last_event_at
    if record.is_terminal or not newest:
        # Out of order, a tie, or after a decision: only a full replay is sure to be right.
        _refold(record, table)
        return
    # Undecided records have skipped no event, so last_event_at is the latest eventDate seen:
    # an event strictly after it sorts last, and folding it on is the same as a replay.
    record.state = state
    record.raw_status = event.raw_status
    record.verification_method = event.verification_method
    record.last_event_at = event.event_date
    record.decided_at = event.event_date if state in TERMINAL_STATES else None


def _mark_orphan(event_id: str) -> None:
    """Flag an event whose UUID the portal never created (rare, so a second statement)."""
    db.session.execute(
        update(WebhookEvent).where(WebhookEvent.event_id == event_id).values(orphan=True)
    )


def _insert_event(event: IncomingEvent) -> bool:
    """Insert the event row; return False when its id was recorded before.

    ON CONFLICT DO NOTHING answers duplicates without an error (and without an error line in
    PostgreSQL's log for every redelivery); other databases fall back to a savepoint.
    """
    values = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "user_access_code": event.user_access_code,
        "raw_status": event.raw_status,
        "verification_method": event.verification_method,
        "event_date": event.event_date,
        "received_at": utcnow(),
        "orphan": False,
    }
    dialect = db.session.get_bind().dialect.name
    if dialect in UPSERT_INSERTS:
        table = WebhookEvent.__table__
        statement = (
            UPSERT_INSERTS[dialect](table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(table.c.id)
        )
        return db.session.connection().execute(statement).first() is not None
    try:
        with db.session.begin_nested():
            db.session.connection().execute(insert(WebhookEvent.__table__).values(**values))
    except IntegrityError:
        return False
    return True


def _refold(record: Verification, table: Mapping[str, str]) -> None:
    events = db.session.execute(
        select(
            WebhookEvent.event_id,
            WebhookEvent.raw_status,
            WebhookEvent.verification_method,
            WebhookEvent.event_date,
        ).where(
            WebhookEvent.user_access_code == record.user_access_code,
            WebhookEvent.event_type.in_(STATE_EVENTS),
            WebhookEvent.event_date.is_not(None),
        )
    )
    folded = fold_events(events, table)
    record.state = folded.state
    record.raw_status = folded.raw_status
    record.verification_method = folded.verification_method
    record.last_event_at = folded.last_event_at
    record.decided_at = folded.decided_at


def was_reviewed(user_access_code: str, table: Mapping[str, str]) -> bool:
    """Tell whether any status event put the UUID under review."""
    statuses = db.session.scalars(
        select(WebhookEvent.raw_status).where(
            WebhookEvent.user_access_code == user_access_code,
            WebhookEvent.event_type.in_(STATE_EVENTS),
        )
    )
    return any(state_for(status, table) == NEEDS_REVIEW for status in statuses)


def list_events(user_access_code: str) -> list[WebhookEvent]:
    """Return a UUID's events, oldest eventDate first."""
    return list(
        db.session.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.user_access_code == user_access_code)
            # Events without a date (other types) last on every database.
            .order_by(WebhookEvent.event_date.is_(None), WebhookEvent.event_date, WebhookEvent.id)
        )
    )
