"""Webhook events and the state machine: recording, folding and reading them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
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
from portal.store import rollup
from portal.store.connections import UPSERT_INSERTS, once_more_if_disconnected, write_turn

STATUS_EVENT = "SELF_VERIFICATION_TRY_STATUS"
# A status the portal read back from Authenticate itself (see reconcile.py).
RECONCILED_EVENT = "PORTAL_RECONCILED_STATUS"
STATE_EVENTS = (STATUS_EVENT, RECONCILED_EVENT)


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


EVENTS = WebhookEvent.__table__
RECORDS = Verification.__table__
# Statements built once: each delivery only binds its values (no per-call construction).
# Read (and on PostgreSQL lock) the record only after the insert: on SQLite the insert holds
# the write lock, so this read sees every event committed before ours, and concurrent
# deliveries for one UUID fold one after the other on both backends. The columns are the
# fold's and the dashboard roll-up's (rollup.tracking).
LOCK_RECORD = (
    select(
        RECORDS.c.id,
        RECORDS.c.state,
        RECORDS.c.raw_status,
        RECORDS.c.verification_method,
        RECORDS.c.last_event_at,
        RECORDS.c.decided_at,
        RECORDS.c.created_at,
        RECORDS.c.link_issued_at,
    )
    .where(RECORDS.c.user_access_code == bindparam("uac"))
    .with_for_update()
)
MOVE_RECORD = (
    update(RECORDS)
    .where(RECORDS.c.id == bindparam("record_id"))
    .values(
        state=bindparam("new_state"),
        raw_status=bindparam("new_raw_status"),
        verification_method=bindparam("new_method"),
        last_event_at=bindparam("new_last_event_at"),
        decided_at=bindparam("new_decided_at"),
    )
)
MARK_ORPHAN = update(EVENTS).where(EVENTS.c.event_id == bindparam("orphan_id")).values(orphan=True)
STATE_HISTORY = select(
    EVENTS.c.event_id, EVENTS.c.raw_status, EVENTS.c.verification_method, EVENTS.c.event_date
).where(
    EVENTS.c.user_access_code == bindparam("uac"),
    EVENTS.c.event_type.in_(STATE_EVENTS),
    EVENTS.c.event_date.is_not(None),
)
# ON CONFLICT DO NOTHING answers duplicates without an error (and without an error line in
# PostgreSQL's log for every redelivery); other databases fall back to a savepoint.
INSERT_NEW_EVENT = {
    name: make(EVENTS).on_conflict_do_nothing(index_elements=["event_id"]).returning(EVENTS.c.id)
    for name, make in UPSERT_INSERTS.items()
}


@dataclass
class RecordRow:
    """The locked record's fold columns, changed in place as the event is applied."""

    id: int
    state: str
    raw_status: str | None
    verification_method: str | None
    last_event_at: datetime | None
    decided_at: datetime | None
    created_at: datetime
    link_issued_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def fold_columns(self) -> tuple[Any, ...]:
        return (
            self.state,
            self.raw_status,
            self.verification_method,
            self.last_event_at,
            self.decided_at,
        )


def record_event(event: IncomingEvent, table: Mapping[str, str]) -> str:
    """Record a webhook event and move its record, in one transaction.

    Returns "duplicate" for an event id seen before, "orphan" for a UUID the portal never
    created, "ignored" for event types that do not change state, else "recorded". SQLAlchemy
    Core on the session's connection: three statements and the commit for the usual delivery
    (insert, lock, update), no ORM objects.
    """
    return once_more_if_disconnected(lambda: _record(event, table))


def _record(event: IncomingEvent, table: Mapping[str, str]) -> str:
    connection = db.session.connection()
    with write_turn(connection):
        return _record_on(connection, event, table)


def _record_on(connection: Connection, event: IncomingEvent, table: Mapping[str, str]) -> str:
    if not _insert_event(connection, event):
        db.session.rollback()
        return "duplicate"
    row = None
    if event.user_access_code is not None:
        row = connection.execute(LOCK_RECORD, {"uac": event.user_access_code}).first()
    if row is None:
        connection.execute(MARK_ORPHAN, {"orphan_id": event.event_id})
        outcome = "orphan"
    elif event.event_type not in STATE_EVENTS or event.event_date is None:
        outcome = "ignored"
    else:
        record = RecordRow(*row)
        before = record.fold_columns()
        # The roll-up writes its counters as the block ends, so its rows (today's are hot:
        # every delivery's transaction updates them) stay locked only for the commit.
        with rollup.tracking(record):
            _apply(connection, record, event, table)
            if record.fold_columns() != before:
                connection.execute(MOVE_RECORD, _move_params(record))
        outcome = "recorded"
    db.session.commit()
    return outcome


def _move_params(record: RecordRow) -> dict[str, Any]:
    return {
        "record_id": record.id,
        "new_state": record.state,
        "new_raw_status": record.raw_status,
        "new_method": record.verification_method,
        "new_last_event_at": record.last_event_at,
        "new_decided_at": record.decided_at,
    }


def _apply(
    connection: Connection, record: RecordRow, event: IncomingEvent, table: Mapping[str, str]
) -> None:
    """Move the record by one new event, replaying its history only when order demands it."""
    assert event.event_date is not None and event.user_access_code is not None
    state = state_for(event.raw_status, table)
    if record.is_terminal and state not in TERMINAL_STATES:
        # A decision is never replaced by a non-terminal event, wherever that event sorts.
        return
    newest = record.last_event_at is None or event.event_date > record.last_event_at
    if record.is_terminal or not newest:
        # Out of order, a tie, or after a decision: only a full replay is sure to be right.
        history = connection.execute(STATE_HISTORY, {"uac": event.user_access_code})
        folded = fold_events(history, table)
        record.state = folded.state
        record.raw_status = folded.raw_status
        record.verification_method = folded.verification_method
        record.last_event_at = folded.last_event_at
        record.decided_at = folded.decided_at
        return
    # Undecided records have skipped no event, so last_event_at is the latest eventDate seen:
    # an event strictly after it sorts last, and folding it on is the same as a replay.
    record.state = state
    record.raw_status = event.raw_status
    record.verification_method = event.verification_method
    record.last_event_at = event.event_date
    record.decided_at = event.event_date if state in TERMINAL_STATES else None


def _insert_event(connection: Connection, event: IncomingEvent) -> bool:
    """Insert the event row; return False when its id was recorded before."""
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
    statement = INSERT_NEW_EVENT.get(connection.dialect.name)
    if statement is not None:
        return connection.execute(statement, values).first() is not None
    try:
        with db.session.begin_nested():
            connection.execute(insert(EVENTS), values)
    except IntegrityError:
        return False
    return True


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
