"""Every database read and write: submissions and verification records here.

Webhook events and the state machine are in `store.events` (re-exported here), admin accounts
and the audit log in `store.admin`, the dashboard's summary in `store.dashboard` (read from the
daily roll-up that `store.rollup` keeps), its record pages in `store.records`, webhook health
in `store.health`, and the connection helpers (reads, retries, SQLite's write queue) in
`store.connections`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, select, update

from portal.extensions import db
from portal.models import PENDING, TERMINAL_STATES, Submission, Verification, utcnow
from portal.store import rollup
from portal.store.connections import (
    UPSERT_INSERTS,
    once_more_if_disconnected,
    single_statements,
    write_turn,
)


def hash_submit_key(key: str) -> str:
    """Return the stored form of a submit key, so a database reader cannot replay it."""
    return hashlib.sha256(key.encode()).hexdigest()


def claim_submission(key: str) -> bool:
    """Claim a one-time submit key; return False if it was claimed before.

    The claim is committed before Authenticate is called, so a second request carrying the
    same key (double click, resubmit, another instance) finds it instead of creating a user.
    One INSERT ... ON CONFLICT DO NOTHING, in autocommit on PostgreSQL: no BEGIN and COMMIT
    round trips, and no ORM unit of work, on the path every new user takes.
    """
    with single_statements() as connection, write_turn(connection):
        params = {"key_hash": hash_submit_key(key), "created_at": utcnow()}
        claimed = connection.execute(CLAIM_SUBMISSION[connection.dialect.name], params).first()
        connection.commit()
    return claimed is not None


def release_submission(key: str) -> None:
    """Drop an unfinished claim after a failed create, so the same form can be sent again."""
    db.session.execute(
        delete(Submission).where(
            Submission.key_hash == hash_submit_key(key), Submission.user_access_code.is_(None)
        )
    )
    db.session.commit()


def submission_user(key: str) -> str | None:
    """Return the UUID created for a submit key, or None if none was (yet)."""
    return db.session.scalar(
        select(Submission.user_access_code).where(Submission.key_hash == hash_submit_key(key))
    )


def wait_for_submission(key: str, timeout: float, interval: float = 0.1) -> str | None:
    """Return the UUID created for a claimed key, waiting up to `timeout` seconds for it."""
    key_hash = hash_submit_key(key)
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        uac = db.session.scalar(
            select(Submission.user_access_code).where(Submission.key_hash == key_hash)
        )
        if uac is not None or time.monotonic() >= deadline:
            return uac
        time.sleep(interval)


def add_verification(user_access_code: str, submit_key: str) -> None:
    """Store a new UUID and tie it to its submit key, in one transaction."""
    record = Verification(user_access_code=user_access_code, state=PENDING, created_at=utcnow())
    db.session.execute(
        _RECORDS.insert(),
        {
            "user_access_code": user_access_code,
            "state": PENDING,
            "created_at": record.created_at,
            "updated_at": record.created_at,
        },
    )
    rollup.added(record)  # counts the values above; the object itself is never added
    key_hash = hash_submit_key(submit_key)
    tied = db.session.execute(TIE_SUBMISSION, {"hashed": key_hash, "uac": user_access_code})
    if tied.rowcount == 0:  # the claim was purged meanwhile: keep the key's answer anyway
        db.session.execute(
            _SUBMISSIONS.insert(),
            {"key_hash": key_hash, "user_access_code": user_access_code, "created_at": utcnow()},
        )
    db.session.commit()


def get_verification(user_access_code: str) -> Verification | None:
    """Return the record for a UUID, or None if the portal never created it."""
    return db.session.scalar(
        select(Verification).where(Verification.user_access_code == user_access_code)
    )


@dataclass(frozen=True)
class StatusSnapshot:
    """What the status poll needs of a record, read without building an ORM object."""

    user_access_code: str
    state: str
    updated_at: datetime
    link_issued_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


_RECORDS = Verification.__table__
_SUBMISSIONS = Submission.__table__
TIE_SUBMISSION = (
    update(_SUBMISSIONS)
    .where(_SUBMISSIONS.c.key_hash == bindparam("hashed"))
    .values(user_access_code=bindparam("uac"))
)
CLAIM_SUBMISSION = {
    name: make(_SUBMISSIONS)
    .on_conflict_do_nothing(index_elements=["key_hash"])
    .returning(_SUBMISSIONS.c.key_hash)
    for name, make in UPSERT_INSERTS.items()
}
STATUS_QUERY = select(_RECORDS.c.state, _RECORDS.c.updated_at, _RECORDS.c.link_issued_at).where(
    _RECORDS.c.user_access_code == bindparam("uac")
)


def get_status(user_access_code: str) -> StatusSnapshot | None:
    """Return a record's state and last change, for the poll that runs every few seconds.

    One statement on a pooled connection of its own (see connections.single_statements).
    """

    def read() -> Row[Any] | None:
        with single_statements() as connection:
            return connection.execute(STATUS_QUERY, {"uac": user_access_code}).first()

    row = once_more_if_disconnected(read)
    if row is None:
        return None
    return StatusSnapshot(user_access_code, row.state, row.updated_at, row.link_issued_at)


def mark_link_issued(user_access_code: str, token: str) -> None:
    """Remember when, and with which token, a Medallion link was last handed out."""
    # Locked, as a webhook locks it, so the roll-up counts the link under the current state.
    record = db.session.scalar(
        select(Verification)
        .where(Verification.user_access_code == user_access_code)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if record is not None:
        with rollup.tracking(record):
            record.link_issued_at = utcnow()
        record.medallion_token = token
        db.session.commit()


def list_undecided(updated_before: datetime) -> list[Verification]:
    """Return records that are not decided and have not moved since `updated_before`."""
    return list(
        db.session.scalars(
            select(Verification)
            .where(
                Verification.state.not_in(TERMINAL_STATES),
                Verification.updated_at < updated_before,
            )
            .order_by(Verification.updated_at)
        )
    )


# Events and the state machine live in store.events; callers use them as store.<name>.
from portal.store.events import (  # noqa: E402
    RECONCILED_EVENT,
    STATE_EVENTS,
    STATUS_EVENT,
    Folded,
    IncomingEvent,
    fold_events,
    list_events,
    record_event,
    state_for,
    was_reviewed,
)

__all__ = [
    "RECONCILED_EVENT",
    "STATE_EVENTS",
    "STATUS_EVENT",
    "Folded",
    "IncomingEvent",
    "fold_events",
    "list_events",
    "record_event",
    "state_for",
    "was_reviewed",
]
