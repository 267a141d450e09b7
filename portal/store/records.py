"""Record pages of the admin dashboard: filters, UUID search, keyset pages and the CSV rows.

Every query is answered from an index (see Verification.__table_args__): pages walk
(sort column, id) by keyset, never OFFSET.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Select, and_, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from portal.extensions import db
from portal.models import UUID_LENGTH, Verification

SORT_COLUMNS = {"created_at": Verification.created_at, "updated_at": Verification.updated_at}
EXPORT_COLUMNS = (
    Verification.user_access_code,
    Verification.state,
    Verification.raw_status,
    Verification.verification_method,
    Verification.created_at,
    Verification.updated_at,
    Verification.link_issued_at,
    Verification.decided_at,
)
HEX_DIGITS = "0123456789abcdef"
UUID_DASHES = frozenset({8, 13, 18, 23})
MAX_CURSOR_LENGTH = 200
# Up to this many rows match a narrowing filter: sort them rather than walk the sort index.
MAX_SORTED_MATCHES = 50000


class InvalidCursor(ValueError):
    """A page cursor that is malformed, tampered with, or made for another sort order."""


@dataclass(frozen=True)
class RecordFilters:
    """What the records table shows; `created_until` is exclusive, `q` lower-case."""

    state: str | None = None
    created_from: datetime | None = None
    created_until: datetime | None = None
    q: str | None = None
    sort: str = "created_at"
    descending: bool = True


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: its sort value and id, and the order it was read in."""

    value: datetime
    id: int
    sort: str
    descending: bool

    def encode(self) -> str:
        """Return the cursor as URL-safe base64 of compact JSON."""
        payload = [self.sort, self.descending, self.value.isoformat(), self.id]
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Read a cursor made by `encode`; raises InvalidCursor for anything else."""
        try:
            if len(token) > MAX_CURSOR_LENGTH:
                raise ValueError("too long")
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
            sort, descending, value, row_id = json.loads(raw)
            moment = datetime.fromisoformat(value)
            checks = (
                sort in SORT_COLUMNS,
                isinstance(descending, bool),
                moment.tzinfo is not None,
                type(row_id) is int and row_id > 0,
            )
            if not all(checks):
                raise ValueError("unexpected values")
            return cls(moment.astimezone(UTC), row_id, sort, descending)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidCursor(
                "That page link is not valid. Start again from the first page."
            ) from exc


@dataclass(frozen=True)
class RecordPage:
    """One page of records; `next_cursor` is None on the last page."""

    records: list[Verification]
    next_cursor: Cursor | None


def is_uuid_prefix(text: str) -> bool:
    """Tell whether `text` is a lower-case UUID or its start, dashes where a UUID has them."""
    if not 0 < len(text) <= UUID_LENGTH:
        return False
    return all(
        char == "-" if index in UUID_DASHES else char in HEX_DIGITS
        for index, char in enumerate(text)
    )


def prefix_upper_bound(prefix: str) -> str | None:
    """Return the least string sorting above every UUID that starts with `prefix`, if any.

    It steps the last hex digit up (carrying past f and dashes) instead of adding one to the
    last character, so it holds in linguistic collations too, where "9" + 1 = ":" is ignored.
    """
    chars = list(prefix)
    while chars:
        last = chars.pop()
        if last not in ("-", "f"):
            return "".join(chars) + HEX_DIGITS[HEX_DIGITS.index(last) + 1]
    return None


def _prefix_range(q: str) -> list[ColumnElement[bool]]:
    # A range on the unique index (LIKE would need text_pattern_ops on PostgreSQL); see
    # prefix_upper_bound for why the bound holds in any collation.
    low, column = q.rstrip("-"), Verification.user_access_code
    high = prefix_upper_bound(low)
    return [column >= low] + ([column < high] if high is not None else [])


def _created_range(filters: RecordFilters) -> list[ColumnElement[bool]]:
    clauses = []
    if filters.created_from is not None:
        clauses.append(Verification.created_at >= filters.created_from)
    if filters.created_until is not None:
        clauses.append(Verification.created_at < filters.created_until)
    return clauses


def _filter_clauses(filters: RecordFilters) -> list[ColumnElement[bool]]:
    clauses = [Verification.state == filters.state] if filters.state else []
    clauses += _created_range(filters)
    if filters.q and len(filters.q) == UUID_LENGTH:
        clauses.append(Verification.user_access_code == filters.q)
    elif filters.q:
        # Exact in any collation, and no index serves it, so it never steers the planner.
        low = filters.q.rstrip("-")
        clauses.append(func.substr(Verification.user_access_code, 1, len(low)) == low)
    return clauses


def _narrowing(filters: RecordFilters) -> list[ColumnElement[bool]]:
    """Return the filter that may leave few rows, read from an index other than the sort's."""
    if filters.q:
        return _prefix_range(filters.q) if len(filters.q) < UUID_LENGTH else []
    return _created_range(filters) if filters.sort != "created_at" else []


def _at_most(clauses: list[ColumnElement[bool]], cap: int) -> bool:
    found = select(Verification.id).where(*clauses).limit(cap + 1).subquery()
    return db.session.scalar(select(func.count()).select_from(found)) <= cap


@dataclass(frozen=True)
class _Plan:
    """How to read the pages of one set of filters; choosing it costs a query, so once."""

    filters: RecordFilters
    clauses: list[ColumnElement[bool]]
    sort_matches_first: bool

    @classmethod
    def make(cls, filters: RecordFilters) -> _Plan:
        """Choose between walking the sort column's index and sorting the matches.

        The walk fills a page soonest when matches are dense. When they are few (a UUID
        prefix, a week of records sorted by last update) it may cross the whole table, so
        the matches are read through their own index and sorted instead.
        """
        narrowing = _narrowing(filters)
        if narrowing and _at_most(narrowing, MAX_SORTED_MATCHES):
            return cls(filters, _filter_clauses(filters) + narrowing, True)
        return cls(filters, _filter_clauses(filters), False)

    def query(self, after: Cursor | None, limit: int, *entities: Any) -> Select[Any]:
        """Return the query for up to `limit` rows following `after`.

        :raises InvalidCursor: `after` was made for another sort column or direction.
        """
        sort, descending = self.filters.sort, self.filters.descending
        if after is not None and (after.sort, after.descending) != (sort, descending):
            raise InvalidCursor("That page link was made for another sort order. Start again.")
        column = SORT_COLUMNS[sort]
        if not self.sort_matches_first:
            query = select(*entities).where(*self.clauses)
            return _keyset(query, column, Verification.id, after, descending).limit(limit)
        # MATERIALIZED (PostgreSQL 12+, SQLite 3.35+) stops the planners folding the matches
        # back into a walk of the sort index; only the page's own rows are joined after.
        matches = (
            select(Verification.id, column.label("sort_value"))
            .where(*self.clauses)
            .cte("matches")
            .prefix_with("MATERIALIZED")
        )
        page = _keyset(select(matches), matches.c.sort_value, matches.c.id, after, descending)
        on_page = page.limit(limit).subquery("page")
        query = select(*entities).join(on_page, Verification.id == on_page.c.id)
        return query.order_by(*_order(on_page.c.sort_value, on_page.c.id, descending))


def _order(column: Any, row_id: Any, descending: bool) -> tuple[Any, Any]:
    return (column.desc(), row_id.desc()) if descending else (column.asc(), row_id.asc())


def _keyset(
    query: Select[Any], column: Any, row_id: Any, after: Cursor | None, descending: bool
) -> Select[Any]:
    if after is not None:
        # The outer inequality is an index range; the inner one breaks ties on id.
        if descending:
            following = and_(column <= after.value, or_(column < after.value, row_id < after.id))
        else:
            following = and_(column >= after.value, or_(column > after.value, row_id > after.id))
        query = query.where(following)
    return query.order_by(*_order(column, row_id, descending))


def list_records(
    filters: RecordFilters, after: Cursor | None = None, limit: int = 50
) -> RecordPage:
    """Return up to `limit` records following `after`, and the cursor for the page after.

    :raises InvalidCursor: `after` was made for another sort column or direction.
    """
    records = list(db.session.scalars(_Plan.make(filters).query(after, limit + 1, Verification)))
    if len(records) <= limit:
        return RecordPage(records, None)
    last = records[limit - 1]
    cursor = Cursor(getattr(last, filters.sort), last.id, filters.sort, filters.descending)
    return RecordPage(records[:limit], cursor)


def iter_records(filters: RecordFilters, batch: int = 1000) -> Iterator[Row[Any]]:
    """Yield EXPORT_COLUMNS rows for every matching record, one keyset query per `batch`.

    Rows are plain tuples, not models, so a million of them never sit in the session.
    """
    plan, after = _Plan.make(filters), None
    sort_column = SORT_COLUMNS[filters.sort].label("sort_value")
    while True:
        query = plan.query(after, batch, *EXPORT_COLUMNS, Verification.id, sort_column)
        rows = db.session.execute(query).all()
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1]
        after = Cursor(last.sort_value, last.id, filters.sort, filters.descending)
