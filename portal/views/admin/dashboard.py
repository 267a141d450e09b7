"""Admin dashboard pages: counts, funnel and daily chart; the records table and its CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from flask import Response, g, jsonify, render_template, request, stream_with_context
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField
from wtforms.validators import Optional, ValidationError

from portal import charts
from portal.forms import IsoDateField
from portal.models import STATES, utcnow
from portal.store import admin as admin_store
from portal.store import dashboard as dashboard_store
from portal.store import records as records_store
from portal.store.records import InvalidCursor, RecordFilters
from portal.views.admin import bp

RANGES = (7, 30, 90)
DEFAULT_RANGE = 30
PAGE_SIZE = 50
RECENT_SIZE = 10
EXPORT_BATCH = 1000
EXPORT_HEADER = (
    "user_access_code",
    "state",
    "raw_status",
    "verification_method",
    "created_at",
    "updated_at",
    "link_issued_at",
    "decided_at",
)
# Spreadsheets run cells starting with these as formulas (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


@bp.app_template_filter("state_label")
def state_label(state: str) -> str:
    """Return a state as words: "needs_review" -> "Needs review"."""
    return state.replace("_", " ").capitalize()


def _strip_lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class RecordFilterForm(FlaskForm):
    """Filter, search and sort the records table; a GET form, so it needs no CSRF token."""

    class Meta:
        csrf = False

    state = SelectField(
        "State", choices={"": "All states", **{s: state_label(s) for s in STATES}}, default=""
    )
    created_from = IsoDateField("Created from", validators=[Optional()])
    created_to = IsoDateField("Created to", validators=[Optional()])
    q = StringField("UUID", filters=[_strip_lower])
    sort = SelectField(
        "Sort by",
        choices={"created_at": "Created", "updated_at": "Last update"},
        default="created_at",
    )
    order = SelectField(
        "Order", choices={"desc": "Newest first", "asc": "Oldest first"}, default="desc"
    )

    def validate_q(self, field: StringField) -> None:
        if field.data and not records_store.is_uuid_prefix(field.data):
            raise ValidationError(
                "Enter a UUID or its first characters: hex digits 0-9 and a-f, "
                "with dashes where a UUID has them (at most 36 characters)."
            )

    def validate_created_to(self, field: IsoDateField) -> None:
        if field.data and self.created_from.data and field.data < self.created_from.data:
            raise ValidationError("The end date is before the start date.")

    def filters(self) -> RecordFilters:
        """Return the validated choices as store filters; dates are whole UTC days."""
        return RecordFilters(
            state=self.state.data or None,
            created_from=_day_start(self.created_from.data),
            created_until=_day_start(self.created_to.data, days_after=1),
            q=self.q.data or None,
            sort=self.sort.data,
            descending=self.order.data == "desc",
        )

    def args(self) -> dict[str, str]:
        """Return the validated choices as query arguments, leaving out empty ones."""
        values = {
            "state": self.state.data,
            "created_from": self.created_from.data and self.created_from.data.isoformat(),
            "created_to": self.created_to.data and self.created_to.data.isoformat(),
            "q": self.q.data,
            "sort": self.sort.data,
            "order": self.order.data,
        }
        return {key: value for key, value in values.items() if value}


def _day_start(day: date | None, days_after: int = 0) -> datetime | None:
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=days_after), time.min, tzinfo=UTC)


@bp.app_template_filter("human_duration")
def human_duration(seconds: float) -> str:
    """Return a duration in at most two adjacent units: "2 days 3 hours", "45 seconds"."""
    remaining, words = max(round(seconds), 0), []
    for unit, size in UNITS:
        count, remaining = divmod(remaining, size)
        if count:
            words.append(f"{count} {unit}{'' if count == 1 else 's'}")
        elif words:
            break
        if len(words) == 2:
            break
    return " ".join(words) or "under a second"


@bp.app_template_filter("human_age")
def human_age(moment: datetime) -> str:
    """Say how long ago `moment` was, in words."""
    return human_duration((utcnow() - moment).total_seconds())


def csv_cell(value: str | datetime | None) -> str:
    """Return a CSV cell: ISO 8601 UTC for times, and text a spreadsheet will not evaluate."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_chunks(rows: Iterable[Any], chunk: int = EXPORT_BATCH) -> Iterator[str]:
    """Yield the header, then the rows as CSV text, `chunk` rows at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_HEADER)
    for count, row in enumerate(rows, start=1):
        writer.writerow([csv_cell(row[i]) for i in range(len(EXPORT_HEADER))])
        if count % chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def chart_days(days: int) -> tuple[date, date]:
    """Return the first and last of the last `days` UTC days, today included."""
    today = utcnow().date()
    return today - timedelta(days=days - 1), today


@bp.get("")
def dashboard() -> str:
    """Show counts per state, and for the last ?days= (7, 30 or 90) the funnel, median and chart."""
    days = request.args.get("days", DEFAULT_RANGE, type=int)
    days = days if days in RANGES else DEFAULT_RANGE
    first, last = chart_days(days)
    series = dashboard_store.daily_series(first, last)
    recent = records_store.list_records(RecordFilters(sort="updated_at"), None, RECENT_SIZE)
    return render_template(
        "admin/dashboard.html",
        days=days,
        ranges=RANGES,
        counts=dashboard_store.count_by_state(),
        funnel=dashboard_store.funnel(first, last),
        median=dashboard_store.median_decision_time(first, last),
        series=series,
        chart=charts.daily_chart(series),
        recent=recent.records,
    )


@bp.get("/counts.json")
def counts() -> Response:
    """Return the counts per state and their total; answers 304 when its ETag still matches."""
    by_state = dashboard_store.count_by_state()
    response = jsonify(counts=by_state, total=sum(by_state.values()))
    response.add_etag()
    return response.make_conditional(request)


@bp.get("/records")
def records() -> tuple[str, int]:
    """List records 50 a page by keyset; bad filters or a bad page link answer 400."""
    form = RecordFilterForm(formdata=request.args)
    page, problem = None, None
    if form.validate():
        after = request.args.get("after")
        try:
            cursor = records_store.Cursor.decode(after) if after else None
            page = records_store.list_records(form.filters(), cursor, PAGE_SIZE)
        except InvalidCursor as exc:
            problem = str(exc)
    html = render_template(
        "admin/records.html",
        form=form,
        page=page,
        problem=problem,
        args=form.args() if page is not None else {},
        paged="after" in request.args,
    )
    return html, 200 if page is not None else 400


@bp.get("/records.csv")
def export() -> Response | tuple[str, int]:
    """Stream the filtered records as CSV, reading them in batches, after auditing the export."""
    form = RecordFilterForm(formdata=request.args)
    if not form.validate():
        html = render_template("admin/records.html", form=form, page=None, problem=None, args={})
        return html, 400
    summary = " ".join(f"{key}={value}" for key, value in form.args().items())
    admin_store.add_audit(g.admin.username, "export", detail=summary or "all records")
    rows = records_store.iter_records(form.filters(), EXPORT_BATCH)
    filename = f"records-{utcnow():%Y-%m-%d}.csv"
    return Response(
        stream_with_context(csv_chunks(rows)),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
