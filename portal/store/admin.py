"""Admin accounts and the audit log: reads and writes."""

from __future__ import annotations

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.models import AdminUser, AuditEntry, utcnow

# Checked against when the username is unknown, so both answers take the same time.
_DUMMY_HASH = generate_password_hash("not a password of anyone's")


class AdminExists(ValueError):
    """An admin with that username already exists."""


class NoSuchAdmin(LookupError):
    """No admin has that username."""


def normalise_username(username: str) -> str:
    """Return the canonical form of a username (trimmed, lower-case)."""
    return username.strip().lower()


def get_admin(admin_id: int) -> AdminUser | None:
    """Return the admin with that id, or None."""
    return db.session.get(AdminUser, admin_id)


def get_admin_by_username(username: str) -> AdminUser | None:
    """Return the admin with that username, or None."""
    return db.session.scalar(
        select(AdminUser).where(AdminUser.username == normalise_username(username))
    )


def add_admin(username: str, password: str) -> AdminUser:
    """Create an active admin; the password is stored as a werkzeug scrypt hash."""
    name = normalise_username(username)
    if get_admin_by_username(name) is not None:
        raise AdminExists(name)
    admin = AdminUser(username=name, password_hash=generate_password_hash(password))
    db.session.add(admin)
    db.session.commit()
    return admin


def set_password(username: str, password: str) -> AdminUser:
    """Replace an admin's password and end their sessions everywhere."""
    admin = _require(username)
    admin.password_hash = generate_password_hash(password)
    admin.session_version += 1
    db.session.commit()
    return admin


def disable_admin(username: str) -> AdminUser:
    """Disable an account and end its sessions everywhere."""
    admin = _require(username)
    admin.active = False
    admin.session_version += 1
    db.session.commit()
    return admin


def end_sessions(admin: AdminUser) -> None:
    """Invalidate every session of `admin` (used by logout)."""
    admin.session_version += 1
    db.session.commit()


def authenticate(username: str, password: str) -> AdminUser | None:
    """Return the active admin whose password matches, else None, in similar time either way."""
    admin = get_admin_by_username(username)
    matches = check_password_hash(admin.password_hash if admin else _DUMMY_HASH, password)
    if admin is None or not matches or not admin.active:
        return None
    admin.last_login_at = utcnow()
    db.session.commit()
    return admin


def _require(username: str) -> AdminUser:
    admin = get_admin_by_username(username)
    if admin is None:
        raise NoSuchAdmin(normalise_username(username))
    return admin


def add_audit(
    admin: str, action: str, user_access_code: str | None = None, detail: str | None = None
) -> None:
    """Append an audit entry (committed on its own, so it survives a later failure)."""
    db.session.add(
        AuditEntry(
            admin=admin,
            action=action,
            user_access_code=user_access_code,
            detail=(detail or None) and detail[:200],
        )
    )
    db.session.commit()


def list_audit(limit: int = 100, before_id: int | None = None) -> list[AuditEntry]:
    """Return audit entries newest first, `limit` at a time, older than `before_id`."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(db.session.scalars(query))
