"""Health reads: last webhook delivery, counts by type, orphans, and records for metrics."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import WebhookEvent
from portal.store import RECONCILED_EVENT
from portal.store.dashboard import count_by_state

# Statuses a re-check read back are stored as events too, but no webhook brought them.
_DELIVERED = WebhookEvent.event_type != RECONCILED_EVENT


def last_webhook_at() -> datetime | None:
    """Return when the newest stored webhook arrived, or None if none ever did.

    A MAX over the indexed received_at column: PostgreSQL reads the index from its newest end.
    """
    return db.session.scalar(select(func.max(WebhookEvent.received_at)).where(_DELIVERED))


def count_events_by_type(since: datetime) -> dict[str, int]:
    """Return webhooks received since `since`, counted per event type, types sorted.

    Every type the portal acknowledged is counted, including ones it does not act on.
    """
    rows = db.session.execute(
        select(WebhookEvent.event_type, func.count())
        .where(WebhookEvent.received_at >= since, _DELIVERED)
        .group_by(WebhookEvent.event_type)
        .order_by(WebhookEvent.event_type)
    )
    return {event_type: count for event_type, count in rows}


def list_orphans(before_id: int | None = None, limit: int = 50) -> list[WebhookEvent]:
    """Return events for UUIDs the portal never created, newest first, ids below `before_id`.

    Keyset pagination on the primary key: ids grow with arrival, so this is received order.
    """
    query = (
        select(WebhookEvent)
        # A bare boolean, not IS TRUE: a partial index "WHERE orphan" can then serve it.
        .where(WebhookEvent.orphan)
        .order_by(WebhookEvent.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(WebhookEvent.id < before_id)
    return list(db.session.scalars(query))


def count_records_by_state(timeout_ms: int) -> dict[str, int]:
    """Return count_by_state(); on PostgreSQL the query is cancelled after `timeout_ms`.

    For metrics scrapes, which must come back even when the database is slow.
    """
    try:
        if db.engine.dialect.name == "postgresql":
            # Transaction-local (the third argument), so the pooled connection keeps its default.
            db.session.execute(select(func.set_config("statement_timeout", str(timeout_ms), True)))
        return count_by_state()
    finally:
        db.session.rollback()
