import base64
import csv
import html
import io
import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event, select

from portal.charts import daily_chart, nice_ceiling
from portal.extensions import db
from portal.models import (
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    NEEDS_REVIEW,
    PENDING,
    VERIFIED,
    AdminUser,
    AuditEntry,
    Verification,
    utcnow,
)
from portal.store import dashboard as dashboard_store
from portal.store import records as records_store
from portal.store import rollup
from portal.store.dashboard import DayCounts, Funnel, MedianTime
from portal.store.records import Cursor, RecordFilters
from portal.views.admin.dashboard import csv_cell, human_duration

T0 = datetime(2025, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
SCRIPT = "<script>alert(1)</script>"
UUID_LINK = re.compile(r'class="uuid" href="[^"]+">([0-9a-f-]{36})</a>')
NEXT_LINK = re.compile(r'<a href="([^"]+)" rel="next">')


def sign_in(app, client):
    """Sign a fresh admin in by session, skipping the (deliberately slow) password hash."""
    with app.app_context():
        admin = AdminUser(username="ada", password_hash="unused")
        db.session.add(admin)
        db.session.commit()
        admin_id, version = admin.id, admin.session_version
    with client.session_transaction() as session:
        session["admin_id"], session["admin_version"] = admin_id, version
    return client


@pytest.fixture
def signed_in(store_app):
    """A signed-in client on each backend."""
    return sign_in(store_app, store_app.test_client())


@pytest.fixture
def sqlite_signed_in(app, client):
    """A signed-in client on SQLite only, for checks that never reach a query."""
    return sign_in(app, client)


def add(state=PENDING, created=T0, uac=None, **fields):
    fields.setdefault("updated_at", created)
    record = Verification(
        user_access_code=uac or str(uuid.uuid4()), state=state, created_at=created, **fields
    )
    db.session.add(record)
    db.session.commit()
    # Seeded behind the store's back, with chosen times: recount the roll-up as a repair would.
    rollup.rebuild()
    return record


def seed_known():
    """Records whose funnel, median and daily series are worked out in the tests below."""
    add(PENDING, T0 + DAY)
    add(IN_PROGRESS, T0 + DAY, link_issued_at=T0 + DAY)
    add(VERIFIED, T0 + 2 * DAY, link_issued_at=T0 + 2 * DAY, decided_at=T0 + 2 * DAY + HOUR)
    add(FAILED, T0 + 3 * DAY, link_issued_at=T0 + 3 * DAY, decided_at=T0 + 3 * DAY + 3 * HOUR)
    add(VERIFIED, T0 + 3 * DAY, link_issued_at=T0 + 3 * DAY, decided_at=T0 + 4 * DAY + 2 * HOUR)
    # Created before the range, decided inside it.
    add(VERIFIED, T0 - DAY, link_issued_at=T0 - DAY, decided_at=T0 + DAY)
    add(EXPIRED, T0 + 11 * DAY)


def day(n):
    """The UTC day n days after T0's."""
    return (T0 + n * DAY).date()


def uuids_in(text):
    return UUID_LINK.findall(text)


def test_count_by_state_counts_every_state_with_zeros(store_app):
    seed_known()

    assert dashboard_store.count_by_state() == {
        PENDING: 1,
        IN_PROGRESS: 1,
        EXPIRED: 1,
        NEEDS_REVIEW: 0,
        VERIFIED: 3,
        FAILED: 1,
    }


def test_funnel_follows_only_records_created_in_the_range(store_app):
    seed_known()

    assert dashboard_store.funnel(day(0), day(9)) == Funnel(5, 4, 3, 2)
    assert dashboard_store.funnel(day(20), day(29)) == Funnel(0, 0, 0, 0)


def test_funnel_stages_give_conversion_rates_when_steps_are_filled_or_empty():
    stages = Funnel(10, 8, 4, 3).stages()
    empty = Funnel(0, 0, 0, 0).stages()

    assert [s.label for s in stages] == ["Created", "Link issued", "Decided", "Verified"]
    assert [s.of_previous for s in stages] == [None, 0.8, 0.5, 0.75]
    assert [s.of_created for s in stages] == [1.0, 0.8, 0.4, 0.3]
    assert {s.of_previous for s in empty} | {s.of_created for s in empty} == {None}


def test_median_decision_time_is_exact_over_few_records_decided_in_the_range(store_app):
    seed_known()

    # 1 h, 3 h, 26 h and 48 h: the middle two average 14.5 h.
    assert dashboard_store.median_decision_time(day(0), day(9)) == MedianTime(
        pytest.approx(52200), exact=True
    )
    assert dashboard_store.median_decision_time(day(2), day(9)) == MedianTime(
        pytest.approx(10800), exact=True
    )
    assert dashboard_store.median_decision_time(day(20), day(29)) is None


def test_daily_series_counts_submissions_and_outcomes_per_day_with_zeros(store_app):
    seed_known()

    series = dashboard_store.daily_series(day(0), day(4))

    assert series == [
        DayCounts(date(2025, 3, 1), 0, 0, 0),
        DayCounts(date(2025, 3, 2), 2, 1, 0),
        DayCounts(date(2025, 3, 3), 1, 1, 0),
        DayCounts(date(2025, 3, 4), 2, 0, 1),
        DayCounts(date(2025, 3, 5), 0, 1, 0),
    ]


def test_daily_chart_draws_a_bar_and_two_points_per_day_without_inline_styles():
    series = [DayCounts(date(2025, 3, 1) + timedelta(days=n), n, n % 2, 1) for n in range(7)]

    svg = str(daily_chart(series))

    assert svg.count('class="bar bar-submitted"') == 7
    assert svg.count('class="point point-verified"') == 7
    assert svg.count('class="point point-failed"') == 7
    assert svg.count("<polyline") == 2
    assert '<title id="chart-title">' in svg and '<desc id="chart-desc">' in svg
    assert "21 submitted, 3 verified and 7 failed over 7 days" in svg
    assert "2025-03-07: 6 submitted" in svg
    assert "style=" not in svg


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 3), (7, 8), (9, 10), (21, 30), (101, 200)]
)
def test_nice_ceiling_rounds_up_to_a_round_number(value, ceiling):
    assert nice_ceiling(value) == ceiling


@pytest.mark.parametrize(("most", "labels"), [(4, ["0", "2", "4"]), (5, ["0", "5"])])
def test_daily_chart_labels_its_axis_at_even_steps(most, labels):
    svg = str(daily_chart([DayCounts(date(2025, 3, 1), most, 0, 0)]))

    grid = svg.split('<g class="chart-grid">')[1].split("</g>")[0]
    assert re.findall(r'text-anchor="end">(\d+)</text>', grid) == labels


def test_dashboard_shows_counts_funnel_median_and_a_chart_with_its_table(store_app, signed_in):
    now = utcnow()
    add(VERIFIED, now - 2 * HOUR, link_issued_at=now - 2 * HOUR, decided_at=now - HOUR)
    add(FAILED, now - 3 * HOUR, link_issued_at=now - 3 * HOUR, decided_at=now - HOUR)
    add(PENDING, now - HOUR)

    response = signed_in.get("/admin?days=7")

    text = response.text
    assert response.status_code == 200
    assert text.count('class="bar bar-submitted"') == 7
    assert "3 submitted, 1 verified and 1 failed over 7 days" in text
    assert re.search(r'<dd data-state="verified">1</dd>', text)
    assert re.search(r'<dd data-state="needs_review">0</dd>', text)
    assert re.search(r"<dd data-total>3</dd>", text)
    assert 'id="median-decision">1 hour 30 minutes<' in text
    table = text[text.index('id="chart-table"') :]
    rows = re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", table, re.S)
    cells = [re.findall(r"<td>(\d+)</td>", row) for row in rows]
    assert len(rows) == 7
    assert [sum(int(c[i]) for c in cells) for i in range(3)] == [3, 1, 1]
    assert 'src="/static/admin.js"' in text


def test_dashboard_says_when_the_median_is_an_estimate_and_how_close(
    store_app, signed_in, monkeypatch
):
    now = utcnow()
    add(VERIFIED, now - 2 * HOUR, link_issued_at=now - 2 * HOUR, decided_at=now - HOUR)
    add(FAILED, now - 3 * HOUR, link_issued_at=now - 3 * HOUR, decided_at=now - HOUR)
    exact = signed_in.get("/admin?days=7").text
    monkeypatch.setattr(dashboard_store, "EXACT_MEDIAN_MAX", 1)

    estimated = signed_in.get("/admin?days=7").text

    assert 'id="median-decision">1 hour 30 minutes<' in exact
    assert 'about <strong id="median-decision">' not in exact and "within ±" not in exact
    # 1.5 hours, within 2.5%: 88 to 92 minutes.
    shown = r'about <strong id="median-decision">1 hour (2[7-9]|3[0-2]) minutes<'
    assert re.search(shown, estimated)
    assert "within ±2.5%" in estimated


def test_dashboard_falls_back_to_thirty_days_when_the_range_is_unknown(store_app, signed_in):
    response = signed_in.get("/admin?days=5")

    assert response.status_code == 200
    assert response.text.count('class="bar bar-submitted"') == 30


def test_counts_json_returns_every_state_and_answers_304_to_its_etag(store_app, signed_in):
    add(VERIFIED)

    first = signed_in.get("/admin/counts.json")
    again = signed_in.get("/admin/counts.json", headers={"If-None-Match": first.headers["ETag"]})

    assert first.json == {
        "counts": {
            PENDING: 0,
            IN_PROGRESS: 0,
            EXPIRED: 0,
            NEEDS_REVIEW: 0,
            VERIFIED: 1,
            FAILED: 0,
        },
        "total": 1,
    }
    assert first.headers["Cache-Control"] == "no-store"
    assert again.status_code == 304


def test_records_filter_by_state_and_created_date_range(store_app, signed_in):
    inside = add(VERIFIED, T0 + DAY + 23 * HOUR)
    add(FAILED, T0 + DAY)
    add(VERIFIED, T0)
    add(VERIFIED, T0 + 3 * DAY)
    also_inside = add(VERIFIED, T0 + DAY)

    response = signed_in.get(
        "/admin/records",
        query_string={
            "state": "verified",
            "created_from": "2025-03-02",
            "created_to": "2025-03-03",
        },
    )

    assert response.status_code == 200
    assert uuids_in(response.text) == [inside.user_access_code, also_inside.user_access_code]


def test_records_reject_an_end_date_before_the_start_date(store_app, signed_in):
    response = signed_in.get(
        "/admin/records", query_string={"created_from": "2025-03-03", "created_to": "2025-03-02"}
    )

    assert response.status_code == 400
    assert "The end date is before the start date." in response.text


def test_records_reject_a_date_that_does_not_exist_in_plain_words(store_app, signed_in):
    response = signed_in.get("/admin/records", query_string={"created_from": "2025-02-30"})

    assert response.status_code == 400
    assert "Enter a date that exists, as year-month-day" in response.text
    assert 'value="2025-02-30"' in response.text


U1 = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
U2 = "3f6c2a9f-0000-4000-8000-000000000000"
U3 = "3f6d0000-0000-4000-8000-000000000000"
U4 = "ffffffff-ffff-4fff-8fff-ffffffffffff"
U5 = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f4"


SEARCHES = [
    (U1, {U1}),
    ("3f6c", {U1, U2, U5}),
    ("3f6c2a9e-", {U1, U5}),
    ("3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f", {U1, U5}),
    (" 3F6C2A9F ", {U2}),
    ("3f6", {U1, U2, U3, U5}),
    ("fff", {U4}),
    ("0", set()),
]


# A cap of 0 makes every narrowing filter "dense": pages then walk the sort index.
PLANS = pytest.mark.parametrize("cap", [0, records_store.MAX_SORTED_MATCHES])


@PLANS
def test_records_search_finds_a_uuid_or_uuid_prefix(store_app, signed_in, monkeypatch, cap):
    monkeypatch.setattr(records_store, "MAX_SORTED_MATCHES", cap)
    for n, uac in enumerate((U1, U2, U3, U4, U5)):
        add(created=T0 + n * HOUR, uac=uac)

    for q, expected in SEARCHES:
        response = signed_in.get("/admin/records", query_string={"q": q})
        assert response.status_code == 200
        assert set(uuids_in(response.text)) == expected, q


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [("3f6c", "3f6d"), ("3f69", "3f6a"), ("3f6f", "3f7"), ("abcdef0f-f", "abcdef1"), ("fff", None)],
)
def test_prefix_upper_bound_steps_the_last_hex_digit_up(prefix, bound):
    assert records_store.prefix_upper_bound(prefix) == bound


@pytest.mark.parametrize("q", ["xyz", "3f6c%", "3f6c_", "a" * 37, "3f6c2a9e8", "-3f", U1 + "0"])
def test_records_reject_a_search_that_is_not_a_uuid_prefix_with_400(sqlite_signed_in, q):
    response = sqlite_signed_in.get("/admin/records", query_string={"q": q})

    assert response.status_code == 400
    assert "Enter a UUID or its first characters" in response.text


@pytest.mark.parametrize(
    "args",
    [
        {"state": "bogus"},
        {"sort": "id"},
        {"order": "up"},
        {"created_from": "2025-13-01"},
    ],
)
def test_records_reject_unknown_filter_values_with_400(sqlite_signed_in, args):
    response = sqlite_signed_in.get("/admin/records", query_string=args)

    assert response.status_code == 400
    assert "Please correct these" in response.text


def b64(raw):
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


BAD_CURSORS = [
    "not a cursor!",
    b64("not json"),
    b64('["created_at", true, "2025-03-01T00:00:00+00:00"]'),
    b64('["created_at", true, "2025-03-01T00:00:00", 5]'),
    b64('["created_at", true, "2025-03-01T00:00:00+00:00", "5"]'),
    b64('["id", true, "2025-03-01T00:00:00+00:00", 5]'),
    b64('["created_at", "yes", "2025-03-01T00:00:00+00:00", 5]'),
    b64('["created_at", true, "0001-01-01T00:00:00+14:00", 5]'),
    "A" * 500,
    Cursor(T0, 5, "updated_at", True).encode(),
    Cursor(T0, 5, "created_at", False).encode(),
]


@pytest.mark.parametrize("after", BAD_CURSORS)
def test_records_reject_a_bad_page_cursor_with_400(sqlite_signed_in, after):
    response = sqlite_signed_in.get("/admin/records", query_string={"after": after})

    assert response.status_code == 400
    assert "page link" in response.text


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("created_at", "desc", [2, 1, 0]),
        ("created_at", "asc", [0, 1, 2]),
        ("updated_at", "desc", [1, 0, 2]),
        ("updated_at", "asc", [2, 0, 1]),
    ],
)
def test_records_sort_by_created_or_updated_both_ways(store_app, signed_in, sort, order, expected):
    records = [
        add(created=T0, updated_at=T0 + 5 * DAY),
        add(created=T0 + DAY, updated_at=T0 + 6 * DAY),
        add(created=T0 + 2 * DAY, updated_at=T0 + 2 * DAY),
    ]

    response = signed_in.get("/admin/records", query_string={"sort": sort, "order": order})

    assert uuids_in(response.text) == [records[i].user_access_code for i in expected]


@pytest.mark.parametrize(
    ("query", "cap"),
    [
        ("order=desc", 0),
        ("order=asc", 0),
        # Sorted by last update within a creation range: the matches are sorted first.
        ("sort=updated_at&order=desc&created_from=2025-02-28", 10**6),
        ("sort=updated_at&order=asc&created_from=2025-02-28", 10**6),
    ],
)
def test_records_pages_miss_and_repeat_nothing_while_rows_arrive(
    store_app, signed_in, monkeypatch, query, cap
):
    monkeypatch.setattr(records_store, "MAX_SORTED_MATCHES", cap)
    # Three records share each timestamp, so pages must break ties on id.
    original = {
        add(created=T0 + (n // 3) * timedelta(minutes=1)).user_access_code for n in range(130)
    }
    arrived, seen = set(), []
    url = f"/admin/records?{query}"
    while url:
        response = signed_in.get(url)
        assert response.status_code == 200
        page = uuids_in(response.text)
        assert len(page) <= 50
        seen.extend(page)
        for created in (utcnow(), T0 + timedelta(minutes=20), T0 - DAY):
            arrived.add(add(created=created).user_access_code)
        found = NEXT_LINK.search(response.text)
        url = found and html.unescape(found.group(1))

    assert len(seen) == len(set(seen))
    assert original <= set(seen)
    assert set(seen) <= original | arrived


@PLANS
@pytest.mark.parametrize("descending", [True, False])
def test_records_sorted_by_update_within_a_creation_range_page_in_order(
    store_app, monkeypatch, cap, descending
):
    monkeypatch.setattr(records_store, "MAX_SORTED_MATCHES", cap)
    inside = [add(created=T0 + n * HOUR, updated_at=T0 + (7 - n) * DAY) for n in range(5)]
    add(created=T0 - DAY, updated_at=T0 + 3 * DAY + HOUR)
    add(created=T0 + 2 * DAY, updated_at=T0 + 3 * DAY + HOUR)
    filters = RecordFilters(
        created_from=T0, created_until=T0 + DAY, sort="updated_at", descending=descending
    )

    first = records_store.list_records(filters, None, 3)
    rest = records_store.list_records(filters, first.next_cursor, 3)

    expected = inside if descending else inside[::-1]
    assert first.records + rest.records == expected
    assert rest.next_cursor is None


def test_list_records_hands_back_a_cursor_only_when_more_rows_follow(store_app):
    for n in range(4):
        add(created=T0 + n * HOUR)

    first = records_store.list_records(RecordFilters(), None, 2)
    second = records_store.list_records(RecordFilters(), first.next_cursor, 2)

    assert first.next_cursor is not None and second.next_cursor is None
    assert Cursor.decode(first.next_cursor.encode()) == first.next_cursor
    assert [r.created_at for r in first.records + second.records] == [
        T0 + n * HOUR for n in (3, 2, 1, 0)
    ]


def read_csv(response):
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_export_streams_the_filtered_records_as_csv_and_audits_it(store_app, signed_in):
    wanted = add(
        VERIFIED,
        T0,
        raw_status="Approved",
        verification_method="governmentId",
        link_issued_at=T0 + HOUR,
        decided_at=T0 + 2 * HOUR,
    )
    add(FAILED, T0, raw_status="declined")

    response = signed_in.get("/admin/records.csv?state=verified")

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert re.fullmatch(
        r'attachment; filename="records-\d{4}-\d{2}-\d{2}\.csv"',
        response.headers["Content-Disposition"],
    )
    assert read_csv(response) == [
        [
            "user_access_code",
            "state",
            "raw_status",
            "verification_method",
            "created_at",
            "updated_at",
            "link_issued_at",
            "decided_at",
        ],
        [
            wanted.user_access_code,
            "verified",
            "Approved",
            "governmentId",
            "2025-03-01T00:00:00Z",
            "2025-03-01T00:00:00Z",
            "2025-03-01T01:00:00Z",
            "2025-03-01T02:00:00Z",
        ],
    ]
    db.session.expire_all()
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "export")).one()
    assert (entry.admin, entry.detail) == ("ada", "state=verified sort=created_at order=desc")


def test_export_neutralises_spreadsheet_formulas_in_provider_text(store_app, signed_in):
    statuses = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "fine"]
    for n, status in enumerate(statuses):
        add(created=T0 + n * HOUR, raw_status=status, verification_method="=HYPERLINK()")

    rows = read_csv(signed_in.get("/admin/records.csv?order=asc"))[1:]

    assert [row[2] for row in rows] == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "fine"]
    assert {row[3] for row in rows} == {"'=HYPERLINK()"}


@pytest.mark.parametrize(
    ("value", "cell"),
    [(None, ""), ("ok", "ok"), ("=x", "'=x"), (T0 + HOUR, "2025-03-01T01:00:00Z")],
)
def test_csv_cell_formats_times_and_defuses_formulas(value, cell):
    assert csv_cell(value) == cell


@pytest.mark.parametrize(
    ("filters", "planning"),
    [
        (RecordFilters(descending=False), 0),
        (RecordFilters(created_from=T0, sort="updated_at", descending=False), 1),
    ],
)
def test_iter_records_reads_in_keyset_batches_not_one_fetch(store_app, filters, planning):
    for n in range(10):
        add(created=T0 + n * HOUR)
    statements = []

    def remember(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", remember)
    try:
        rows = list(records_store.iter_records(filters, batch=3))
    finally:
        event.remove(db.engine, "before_cursor_execute", remember)

    assert [row.created_at for row in rows] == [T0 + n * HOUR for n in range(10)]
    # One query per batch of 3 (the last one short), after any query choosing the plan.
    assert len(statements) == planning + 4
    assert all("LIMIT" in statement for statement in statements)


def test_export_rejects_invalid_filters_with_400_and_audits_nothing(store_app, signed_in):
    response = signed_in.get("/admin/records.csv?q=nothex")

    assert response.status_code == 400
    db.session.expire_all()
    assert db.session.scalars(select(AuditEntry).where(AuditEntry.action == "export")).all() == []


def test_provider_text_is_escaped_on_records_and_dashboard(store_app, signed_in):
    add(NEEDS_REVIEW, utcnow(), raw_status=SCRIPT, verification_method=SCRIPT)

    for path in ("/admin", "/admin/records"):
        text = signed_in.get(path).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert SCRIPT not in text


@pytest.mark.parametrize(
    "path", ["/admin", "/admin/counts.json", "/admin/records", "/admin/records.csv?state=failed"]
)
def test_dashboard_pages_redirect_to_login_when_signed_out(client, path):
    response = client.get(path)

    assert response.status_code == 303
    assert response.headers["Location"].startswith("/admin/login?next=")


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "under a second"),
        (45, "45 seconds"),
        (3600, "1 hour"),
        (5400, "1 hour 30 minutes"),
        (90061, "1 day 1 hour"),
        (86460, "1 day"),
        (-5, "under a second"),
    ],
)
def test_human_duration_uses_two_adjacent_units_at_most(seconds, words):
    assert human_duration(seconds) == words


def test_cursor_encodes_to_url_safe_text_that_decodes_back():
    cursor = Cursor(T0 + timedelta(microseconds=7), 42, "updated_at", False)

    token = cursor.encode()

    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))[3] == 42
    assert Cursor.decode(token) == cursor
