"""Admin pages: one record's timeline with re-check and fresh links, webhook health, audit."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from flask import abort, current_app, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from portal import reconcile, refusals, store
from portal.client import AuthenticateError, AuthenticateRejected, MedallionLink
from portal.config import status_map
from portal.forms import EmptyForm
from portal.helpers import get_client, status_url
from portal.models import UUID_LENGTH, Verification, utcnow
from portal.states import describe
from portal.store import admin as admin_store
from portal.store import health as health_store
from portal.views.admin import bp
from portal.views.admin.dashboard import state_label

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
HEALTH_WINDOW = timedelta(hours=24)
# Longer paths are not UUIDs this portal could have stored: the router answers 404 for them.
RECORD_PATH = f"/records/<string(maxlength={UUID_LENGTH}):user_access_code>"
# A cursor longer than this cannot be a row id (and would overflow a bigint).
MAX_CURSOR_DIGITS = 18

# Outcome of reconcile.recheck -> (plain words, flash category).
RECHECK_MESSAGES = {
    "recorded": (
        "Authenticate's current status was recorded: the record is now “{state}”.",
        "message",
    ),
    "duplicate": ("Authenticate reports the status already recorded; nothing changed.", "message"),
    "no-status": ("Authenticate has no status for this link yet; nothing changed.", "message"),
    "no-link": (
        "No Medallion link was ever issued for this record, so there is nothing to ask.",
        "error",
    ),
    "rejected": (
        "Authenticate did not recognise this record's link (it may have expired); nothing changed.",
        "error",
    ),
    "unavailable": (
        "Authenticate could not be reached; nothing changed. Try again in a moment.",
        "error",
    ),
}
LINK_REFUSED = "Authenticate refused to make a link for this UUID (HTTP {code}); nothing changed."
LINK_UNAVAILABLE = (
    "Authenticate could not make a link (unreachable, or an unexpected answer); "
    "nothing changed. Try again in a moment."
)
LINK_DECIDED = "This record is decided, so there is nothing left to continue: no link was made."


class HasId(Protocol):
    """Anything with an integer primary key, to page on."""

    @property
    def id(self) -> int: ...


Row = TypeVar("Row", bound=HasId)


@bp.app_template_filter("utc_time")
def utc_time(value: datetime | None, precise: bool = False) -> str:
    """Format an aware datetime in UTC (milliseconds when `precise`); "—" for None."""
    if value is None:
        return "—"
    moment = value.astimezone(UTC)
    if precise:
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def get_record(user_access_code: str) -> Verification:
    """Return the record for a UUID, or abort with 404."""
    record = store.get_verification(user_access_code)
    if record is None:
        abort(404)
    return record


def require_form() -> None:
    """Abort with 400 unless the POST carries a valid CSRF token."""
    if not EmptyForm().validate_on_submit():
        abort(400)


def before_cursor() -> int | None:
    """Return the ?before=<id> cursor, None when absent; abort 400 when it is not an id."""
    raw = request.args.get("before")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_CURSOR_DIGITS:
        abort(400)
    return int(raw)


def split_page(rows: Sequence[Row], size: int) -> tuple[Sequence[Row], int | None]:
    """Return a page from `size` + 1 rows and the next page's cursor (None on the last page)."""
    if len(rows) > size:
        return rows[:size], rows[size - 1].id
    return rows, None


def render_record(
    record: Verification,
    link: MedallionLink | None = None,
    link_error: str | None = None,
    code: int = 200,
) -> tuple[str, int]:
    """Render the record page; a fresh `link` only ever travels in this response body."""
    page = render_template(
        "admin/record.html",
        record=record,
        text=describe(record.state, current_app.config["SUPPORT_CONTACT"]),
        events=store.list_events(record.user_access_code),
        form=EmptyForm(),
        link=link,
        link_error=link_error,
    )
    return page, code


@bp.get(RECORD_PATH)
def record(user_access_code: str) -> tuple[str, int]:
    """Show a record's fields and every event stored for its UUID, oldest eventDate first."""
    return render_record(get_record(user_access_code))


@bp.post(f"{RECORD_PATH}/recheck")
def recheck(user_access_code: str) -> Response:
    """Ask Authenticate for the record's status now, audit it and say what happened."""
    verification = get_record(user_access_code)
    require_form()
    table = status_map(current_app.config)
    outcome = reconcile.recheck(get_client(), verification, table, utcnow())
    admin_store.add_audit(g.admin.username, "recheck", user_access_code, outcome)
    message, category = RECHECK_MESSAGES.get(outcome, ("Re-check finished: {outcome}.", "message"))
    flash(message.format(state=state_label(verification.state), outcome=outcome), category)
    return redirect(url_for("admin.record", user_access_code=user_access_code), 303)


@bp.post(f"{RECORD_PATH}/link")
def new_link(user_access_code: str) -> Response | tuple[str, int]:
    """Make a fresh Medallion link and show it on this response only.

    The link is a bearer capability, so it never goes into a flash, a cookie or a URL.
    """
    verification = get_record(user_access_code)
    require_form()
    if verification.is_terminal:
        flash(LINK_DECIDED, "error")
        return redirect(url_for("admin.record", user_access_code=user_access_code), 303)
    try:
        link = get_client().create_link(user_access_code, status_url(user_access_code))
    except AuthenticateError as exc:
        logger.warning("admin link for user %s failed: %s", user_access_code, exc)
        problem = LINK_UNAVAILABLE
        if isinstance(exc, AuthenticateRejected):
            problem = LINK_REFUSED.format(code=exc.status_code)
        admin_store.add_audit(
            g.admin.username, "link_failed", user_access_code, detail=type(exc).__name__
        )
        return render_record(verification, link_error=problem, code=502)
    store.mark_link_issued(user_access_code, link.token)
    admin_store.add_audit(g.admin.username, "link", user_access_code)
    return render_record(verification, link=link)


@bp.get("/health")
def health() -> str:
    """Show webhook health over the last 24 hours and the orphan events, newest first."""
    since = utcnow() - HEALTH_WINDOW
    rows = health_store.list_orphans(before_cursor(), PAGE_SIZE + 1)
    orphans, older = split_page(rows, PAGE_SIZE)
    return render_template(
        "admin/health.html",
        last_at=health_store.last_webhook_at(),
        refused=refusals.refusal_counts(),
        by_type=health_store.count_events_by_type(since),
        state_events=store.STATE_EVENTS,
        orphans=orphans,
        older=older,
        paged="before" in request.args,
    )


@bp.get("/audit")
def audit() -> str:
    """List audit entries newest first, a page at a time (?before=<id> for older ones)."""
    rows = admin_store.list_audit(limit=PAGE_SIZE + 1, before_id=before_cursor())
    entries, older = split_page(rows, PAGE_SIZE)
    return render_template(
        "admin/audit.html", entries=entries, older=older, paged="before" in request.args
    )
