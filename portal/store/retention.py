"""Retention: purging idle records and old orphan events, and erasing one UUID on request.

Purges run in batches, each its own short transaction, so a million old rows never hold one
long lock while instances keep serving.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ColumnElement, Row, Table, and_, delete, exists, func, select
from sqlalchemy.exc import SQLAlchemyError

from portal.extensions import db
from portal.models import AuditEntry, Submission, Verification, WebhookEvent
from portal.store import rollup

BATCH_SIZE = 1000

_records = Verification.__table__
_events = WebhookEvent.__table__
_submissions = Submission.__table__


@dataclass(frozen=True)
class Removed:
    """Rows deleted (or, in a dry run, that would be) per kind."""

    records: int = 0
    events: int = 0
    orphan_events: int = 0
    submissions: int = 0

    def __add__(self, other: Removed) -> Removed:
        return Removed(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def anything(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        """Return the counts as one line, e.g. "2 records, 5 events, 0 orphan events, ..."."""
        counts = ((getattr(self, f.name), f.name.replace("_", " ")) for f in fields(self))
        return ", ".join(f"{count} {name}" for count, name in counts)


def _idle_since(cutoff: datetime) -> ColumnElement[bool]:
    """Match records with no activity at or after `cutoff`.

    Activity is any change to the record (state, link handed out) or any webhook received
    for its UUID, even one that changed nothing: age counts from the last of these, never
    from creation, so a verification still under way is never purged.
    """
    recent_event = exists().where(
        WebhookEvent.user_access_code == Verification.user_access_code,
        WebhookEvent.received_at >= cutoff,
    )
    return and_(Verification.updated_at < cutoff, ~recent_event)


def _old_orphans(cutoff: datetime) -> ColumnElement[bool]:
    """Match orphan events received before `cutoff` whose UUID has no record (still)."""
    has_record = exists().where(Verification.user_access_code == WebhookEvent.user_access_code)
    # A bare boolean, not IS TRUE: the partial index "WHERE orphan" can then serve it.
    return and_(WebhookEvent.orphan, WebhookEvent.received_at < cutoff, ~has_record)


def _stale_claims(cutoff: datetime) -> ColumnElement[bool]:
    """Match submit keys claimed before `cutoff` whose create-user call never finished."""
    return and_(Submission.user_access_code.is_(None), Submission.created_at < cutoff)


def count_purgeable(cutoff: datetime) -> Removed:
    """Return what `purge` would delete for `cutoff`, deleting nothing."""
    codes = select(Verification.user_access_code).where(_idle_since(cutoff))
    count = func.count()
    return Removed(
        records=db.session.scalar(select(count).where(_idle_since(cutoff))) or 0,
        events=db.session.scalar(select(count).where(WebhookEvent.user_access_code.in_(codes)))
        or 0,
        orphan_events=db.session.scalar(select(count).where(_old_orphans(cutoff))) or 0,
        submissions=(
            db.session.scalar(select(count).where(Submission.user_access_code.in_(codes))) or 0
        )
        + (db.session.scalar(select(count).where(_stale_claims(cutoff))) or 0),
    )


def purge(cutoff: datetime, actor: str, batch_size: int = BATCH_SIZE) -> Removed:
    """Delete records idle since before `cutoff` with their events and submit keys, then
    orphan events and unfinished submit-key claims older than it, `batch_size` at a time;
    write the audit entry.

    Each batch commits on its own. If one fails, the batches already done stay done, are
    written to the audit log (when the database still answers), and the error carries on up.
    """
    removed = Removed()
    try:
        while (batch := _purge_records(cutoff, batch_size)) is not None:
            removed += batch
        while count := _delete_batch(_events, _events.c.id, _old_orphans(cutoff), batch_size):
            removed += Removed(orphan_events=count)
        key = _submissions.c.key_hash
        while count := _delete_batch(_submissions, key, _stale_claims(cutoff), batch_size):
            removed += Removed(submissions=count)
    except SQLAlchemyError:
        db.session.rollback()
        if removed.anything:
            with suppress(SQLAlchemyError):
                _audit_purge(actor, cutoff, removed, "stopped by a database error")
        raise
    _audit_purge(actor, cutoff, removed, "")
    return removed


def _audit_purge(actor: str, cutoff: datetime, removed: Removed, note: str) -> None:
    since = cutoff.strftime("%Y-%m-%d %H:%M UTC")
    detail = f"idle since before {since}: {removed.describe()}"
    db.session.add(AuditEntry(admin=actor, action="purge", detail=f"{detail} {note}".strip()))
    db.session.commit()


def _purge_records(cutoff: datetime, batch_size: int) -> Removed | None:
    """Delete one batch of idle records, their events and submit keys, in one transaction.

    Returns None when no record is idle any more.
    """
    ids = list(
        db.session.scalars(
            select(Verification.id)
            .where(_idle_since(cutoff))
            .order_by(Verification.updated_at, Verification.id)
            .limit(batch_size)
        )
    )
    if not ids:
        return None
    # The idle test is repeated in the DELETE: a webhook that moved a record since the
    # SELECT keeps it (PostgreSQL re-checks the condition after waiting for that row's lock).
    rows = _delete_records(_records.c.id.in_(ids), _idle_since(cutoff))
    codes = [row.user_access_code for row in rows]
    removed = Removed(records=len(rows), **_delete_belongings(codes))
    db.session.commit()
    return removed


def _delete_records(*criteria: ColumnElement[bool]) -> Sequence[Row[Any]]:
    """Delete the matching records and take them out of the dashboard's roll-up."""
    rows = db.session.execute(
        delete(_records)
        .where(*criteria)
        .returning(
            _records.c.user_access_code,
            _records.c.created_at,
            _records.c.state,
            _records.c.link_issued_at,
            _records.c.decided_at,
        )
    ).all()
    rollup.forget(rows)
    return rows


def _delete_belongings(codes: Sequence[str]) -> dict[str, int]:
    """Delete the events and submit keys of these UUIDs; return the counts."""
    if not codes:
        return {"events": 0, "submissions": 0}
    events = db.session.execute(delete(_events).where(_events.c.user_access_code.in_(codes)))
    submissions = db.session.execute(
        delete(_submissions).where(_submissions.c.user_access_code.in_(codes))
    )
    return {"events": events.rowcount, "submissions": submissions.rowcount}


def _delete_batch(table: Table, key: Column[Any], criteria: ColumnElement[bool], size: int) -> int:
    """Delete up to `size` rows of `table` matching `criteria`, by primary `key`; commit."""
    batch = select(key).where(criteria).order_by(key).limit(size).scalar_subquery()
    result = db.session.execute(delete(table).where(key.in_(batch), criteria))
    db.session.commit()
    return int(result.rowcount)


def erase(user_access_code: str, actor: str) -> Removed:
    """Delete everything held for one UUID and write the audit entry, in one transaction.

    Returns zero counts, and writes no audit entry, when nothing was held for it.
    """
    records = _delete_records(_records.c.user_access_code == user_access_code)
    orphans = db.session.scalar(
        select(func.count()).where(
            WebhookEvent.user_access_code == user_access_code, WebhookEvent.orphan
        )
    )
    belongings = _delete_belongings([user_access_code])
    removed = Removed(
        records=len(records),
        events=belongings["events"] - (orphans or 0),
        orphan_events=orphans or 0,
        submissions=belongings["submissions"],
    )
    if not removed.anything:
        db.session.rollback()
        return removed
    db.session.add(
        AuditEntry(
            admin=actor,
            action="erase",
            user_access_code=user_access_code,
            detail=removed.describe(),
        )
    )
    db.session.commit()
    return removed
