"""Database tables. Only UUIDs, statuses and timestamps: nothing that identifies a person."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Boolean, Date, DateTime, Index, Integer, String, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from portal.extensions import db

PENDING = "pending"
IN_PROGRESS = "in_progress"
NEEDS_REVIEW = "needs_review"
VERIFIED = "verified"
FAILED = "failed"
EXPIRED = "expired"

# Order used to break ties between events with the same eventDate: the further along, the
# higher. Distinct ranks keep the outcome independent of arrival order. A verified and a
# failed decision at the same instant resolve to failed: an identity check fails closed.
STATE_RANK = {PENDING: 0, IN_PROGRESS: 1, EXPIRED: 2, NEEDS_REVIEW: 3, VERIFIED: 4, FAILED: 5}
STATES = tuple(STATE_RANK)
# Decisions. A terminal state is never replaced by a non-terminal one.
TERMINAL_STATES = frozenset({VERIFIED, FAILED})
# Where the person still has something to do on Medallion. Not under review: a new link then
# would start the verification over.
CONTINUABLE_STATES = frozenset({PENDING, IN_PROGRESS, EXPIRED})

UUID_LENGTH = 36
PROVIDER_TEXT_LENGTH = 100


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Store naive UTC on every backend; hand back aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Verification(db.Model):
    """One Authenticate user created through the portal, known only by its UUID."""

    __tablename__ = "verifications"
    # The admin dashboard's indexes (migration 0004). Record pages walk (sort column, id) by
    # keyset, with or without a state filter. The two "cover" indexes carry extra columns so
    # that the funnel, the chart, the median and date-filtered pages sorted by last update
    # read their date range from the index alone.
    __table_args__ = (
        Index(
            "ix_verifications_created_cover",
            "created_at",
            "id",
            "state",
            "link_issued_at",
            "updated_at",
        ),
        Index("ix_verifications_updated_id", "updated_at", "id"),
        Index("ix_verifications_state_created", "state", "created_at", "id"),
        Index("ix_verifications_state_updated", "state", "updated_at", "id"),
        Index("ix_verifications_decided_cover", "decided_at", "state", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_access_code: Mapped[str] = mapped_column(String(UUID_LENGTH), unique=True)
    state: Mapped[str] = mapped_column(String(20), default=PENDING, index=True)
    raw_status: Mapped[str | None] = mapped_column(String(PROVIDER_TEXT_LENGTH))
    verification_method: Mapped[str | None] = mapped_column(String(PROVIDER_TEXT_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    link_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The latest Medallion token: an opaque id, kept so reconciliation can ask for its status.
    medallion_token: Mapped[str | None] = mapped_column(String(PROVIDER_TEXT_LENGTH))
    last_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def can_continue(self) -> bool:
        """Whether a new Medallion link is of any use to the person (see CONTINUABLE_STATES)."""
        return self.state in CONTINUABLE_STATES

    def __repr__(self) -> str:
        return f"<Verification {self.user_access_code} {self.state}>"


class DailyCount(db.Model):
    """The dashboard's roll-up for one UTC day and state, kept by store/rollup.py.

    `created` and `linked` count records created that day that are now in `state` (and of
    those, the ones given a Medallion link); `decided` counts records decided that day that
    are now in `state` (a decision).
    """

    __tablename__ = "daily_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    state: Mapped[str] = mapped_column(String(20), primary_key=True)
    created: Mapped[int] = mapped_column(Integer, default=0)
    linked: Mapped[int] = mapped_column(Integer, default=0)
    decided: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"<DailyCount {self.day} {self.state} {self.created}/{self.decided}>"


class DecisionTimeCount(db.Model):
    """Records decided on one UTC day whose time to decision falls in one histogram bucket."""

    __tablename__ = "decision_time_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # See store/rollup.py decision_bucket: 0 is under a second, then log-spaced.
    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    decided: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"<DecisionTimeCount {self.day} {self.bucket} {self.decided}>"


class Submission(db.Model):
    """A one-time form submit key (hashed), claimed before Authenticate is called."""

    __tablename__ = "submissions"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Null while the create-user call for this key is in flight.
    user_access_code: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Submission {self.key_hash[:8]} {self.user_access_code}>"


class WebhookEvent(db.Model):
    """The allow-listed fields of one webhook delivery; never the body."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_uac_date", "user_access_code", "event_date"),
        # Orphans are rare: a partial index lets the admin list page through them directly.
        Index(
            "ix_webhook_events_orphan_id",
            "id",
            postgresql_where=text("orphan"),
            sqlite_where=text("orphan"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(PROVIDER_TEXT_LENGTH), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    user_access_code: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    raw_status: Mapped[str | None] = mapped_column(String(PROVIDER_TEXT_LENGTH))
    verification_method: Mapped[str | None] = mapped_column(String(PROVIDER_TEXT_LENGTH))
    event_date: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # True when the UUID was never created through this portal.
    orphan: Mapped[bool] = mapped_column(Boolean, default=False)

    def __repr__(self) -> str:
        return f"<WebhookEvent {self.event_id} {self.event_type}>"


class AdminUser(db.Model):
    """A dashboard account. Admin usernames are staff identifiers, not end-user data."""

    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped on password reset, disable and logout-everywhere: sessions carrying an older
    # value are refused on every instance.
    session_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<AdminUser {self.username}>"


class AuditEntry(db.Model):
    """Who did what, when, to which UUID: logins, exports, re-checks, link creations."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    admin: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    user_access_code: Mapped[str | None] = mapped_column(String(UUID_LENGTH))
    detail: Mapped[str | None] = mapped_column(String(200))

    def __repr__(self) -> str:
        return f"<AuditEntry {self.action} by {self.admin}>"
