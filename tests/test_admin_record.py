"""Admin record timeline, re-check, fresh links, webhook health, orphans and the audit log."""

import json
import re
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select

from portal import create_app, store
from portal.client import AuthenticateRejected, AuthenticateUnavailable
from portal.extensions import db
from portal.models import AuditEntry, WebhookEvent, utcnow
from portal.store import admin as admin_store
from portal.store import health as health_store
from portal.views.admin.record import PAGE_SIZE, utc_time
from tests.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    TEST_WEBHOOK_SECRET,
    AdminActions,
    FakeAuthenticate,
    base_config,
    make_app,
)

UAC = "5a7d2c1e-3b4f-4a6d-9e8c-7f1a2b3c4d5e"
OTHER_UAC = "0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b"
HOOK = f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}"
UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/none"
SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class Env:
    """A signed-in admin client on one backend, with its app and fake Authenticate."""

    def __init__(self, app, client, fake):
        self.app = app
        self.client = client
        self.fake = fake


@pytest.fixture
def env(database_url):
    """A signed-in admin on each backend, knowing one pending verification, UAC."""
    app = make_app(database_url)
    fake = FakeAuthenticate()
    app.extensions["portal.client"] = fake
    client = app.test_client()
    actions = AdminActions(app, client)
    actions.create()
    assert actions.login().status_code == 303
    with app.app_context():
        store.add_verification(UAC, "key-a")
    yield Env(app, client, fake)
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def known(app):
    """UAC as a pending verification in the default (SQLite) app."""
    with app.app_context():
        store.add_verification(UAC, "key-a")
    return UAC


def webhook(client, event_id, uac=UAC, status="verified", **fields):
    body = {
        "id": event_id,
        "event": fields.pop("event", "SELF_VERIFICATION_TRY_STATUS"),
        "eventDate": fields.pop("date", "2025-03-14T16:05:09.412Z"),
        "order": {"userAccessCode": uac, "status": status, "verificationMethod": "gov_id"},
    }
    body["order"].update(fields)
    response = client.post(HOOK, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.text
    return response


def issue_token(app, token="tok-1", uac=UAC):
    with app.app_context():
        store.mark_link_issued(uac, token)


def record_of(app, uac=UAC):
    with app.app_context():
        db.session.expire_all()
        return store.get_verification(uac)


def audit_rows(app):
    with app.app_context():
        entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(e.admin, e.action, e.user_access_code, e.detail) for e in entries]


def add_orphans(app, count):
    with app.app_context():
        for n in range(1, count + 1):
            event = store.IncomingEvent(
                f"orphan-{n:03}", "SELF_VERIFICATION_TRY_STATUS", OTHER_UAC, "started", None, None
            )
            assert store.record_event(event, {}) == "orphan"


def csrf_token(html):
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def row_for(html, label):
    """Return the text of the table cell after the one showing `label`."""
    match = re.search(rf"<td><code>{re.escape(label)}</code></td>\s*<td>([^<]*)</td>", html)
    return match and match.group(1)


# --- Record page ---------------------------------------------------------------------------


def test_record_page_shows_every_event_with_raw_fields_in_event_date_order(env):
    webhook(env.client, "evt-c", status="verified", date="2025-03-14T12:00:00Z")
    webhook(env.client, "evt-a", status="started", date="2025-03-14T10:00:00.250Z")
    webhook(env.client, "evt-b", status="Manual_Review", date="2025-03-14T11:00:00Z")
    webhook(env.client, "evt-d", event="SOMETHING_NEW", date="2025-03-14T13:00:00Z")

    response = env.client.get(f"/admin/records/{UAC}")

    assert response.status_code == 200
    html = response.text
    positions = [html.index(f"<code>evt-{name}</code>") for name in "abcd"]
    assert positions == sorted(positions)
    for text in ("started", "Manual_Review", "SOMETHING_NEW", "gov_id", "2025-03-14 10:00:00.250"):
        assert text in html
    assert "Verified" in html  # the state in plain words
    assert "2025-03-14 12:00:00.000 UTC" in html  # decided at


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"/admin/records/{OTHER_UAC}"),
        ("get", "/admin/records/" + "a" * 37),
        ("post", f"/admin/records/{OTHER_UAC}/recheck"),
        ("post", f"/admin/records/{OTHER_UAC}/link"),
    ],
)
def test_record_pages_are_404_for_an_unknown_uuid(admin_client, fake_client, known, method, path):
    response = getattr(admin_client, method)(path)
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert fake_client.links == []


# --- Re-check ------------------------------------------------------------------------------


def test_recheck_records_authenticates_status_audits_and_says_so(
    app, admin_client, fake_client, known
):
    issue_token(app)
    fake_client.statuses["tok-1"] = "verified"

    response = admin_client.post(f"/admin/records/{UAC}/recheck")

    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/records/{UAC}"
    page = admin_client.get(response.headers["Location"])
    assert "the record is now “Verified”" in page.text
    assert record_of(app).state == "verified"
    assert (ADMIN_USERNAME, "recheck", UAC, "recorded") in audit_rows(app)


def test_recheck_when_authenticate_is_unavailable_changes_nothing_and_says_so(
    app, admin_client, fake_client, known, unavailable
):
    issue_token(app)
    fake_client.status_error = unavailable

    response = admin_client.post(f"/admin/records/{UAC}/recheck", follow_redirects=True)

    assert response.status_code == 200
    assert "Authenticate could not be reached; nothing changed." in response.text
    assert record_of(app).state == "pending"
    assert (ADMIN_USERNAME, "recheck", UAC, "unavailable") in audit_rows(app)


def test_recheck_needs_a_csrf_token_when_csrf_is_enabled(sqlite_url):
    app = make_app(sqlite_url, WTF_CSRF_ENABLED=True, EXTERNAL_URL="http://portal.test")
    app.extensions["portal.client"] = FakeAuthenticate()
    client = app.test_client()
    AdminActions(app, client).create()
    with app.app_context():
        store.add_verification(UAC, "key-a")
    login_token = csrf_token(client.get("/admin/login").text)
    credentials = {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    login = client.post("/admin/login", data=dict(credentials, csrf_token=login_token))
    assert login.status_code == 303

    assert client.post(f"/admin/records/{UAC}/recheck").status_code == 400
    assert client.post(f"/admin/records/{UAC}/link").status_code == 400
    form_token = csrf_token(client.get(f"/admin/records/{UAC}").text)
    response = client.post(f"/admin/records/{UAC}/recheck", data={"csrf_token": form_token})
    assert response.status_code == 303
    assert [row[1] for row in audit_rows(app)] == ["login", "recheck"]


# --- New Medallion link ------------------------------------------------------------------


def test_new_link_shows_a_fresh_link_once_audits_it_and_keeps_it_out_of_headers(
    app, admin_client, fake_client, known
):
    response = admin_client.post(f"/admin/records/{UAC}/link")

    assert response.status_code == 200
    assert len(fake_client.links) == 1
    uac, redirect_url = fake_client.links[0]
    assert uac == UAC
    assert redirect_url.startswith("https://portal.example.test/status/")
    record = record_of(app)
    url = f"https://verify.invalid/?token={record.medallion_token}"
    assert f'value="{url}" readonly' in response.text
    assert "expires" in response.text
    assert record.link_issued_at is not None
    assert (ADMIN_USERNAME, "link", UAC, None) in audit_rows(app)
    # A bearer capability: only in this body, never in a header, a cookie or a flash.
    assert "Location" not in response.headers
    for header, value in response.headers.items():
        assert record.medallion_token not in value, header
    with admin_client.session_transaction() as session:
        assert record.medallion_token not in repr(dict(session))
    assert record.medallion_token not in admin_client.get(f"/admin/records/{UAC}").text


def test_new_link_is_refused_for_a_decided_record(app, admin_client, fake_client, known):
    webhook(admin_client, "evt-verified", status="verified")

    response = admin_client.post(f"/admin/records/{UAC}/link", follow_redirects=True)

    assert response.status_code == 200
    assert "nothing left to continue: no link was made" in response.text
    assert fake_client.links == []
    assert record_of(app).link_issued_at is None
    assert "link" not in [row[1] for row in audit_rows(app)]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (AuthenticateUnavailable("down"), "Authenticate could not make a link"),
        (
            AuthenticateRejected("no such user", 404),
            "refused to make a link for this UUID (HTTP 404)",
        ),
    ],
)
def test_new_link_failure_shows_a_502_page_with_the_reason(
    app, admin_client, fake_client, known, error, message
):
    fake_client.link_error = error

    response = admin_client.post(f"/admin/records/{UAC}/link")

    assert response.status_code == 502
    assert message in response.text
    assert "no such user" not in response.text
    assert f'Record <span class="uuid">{UAC}</span>' in response.text
    assert record_of(app).link_issued_at is None
    assert "link" not in [row[1] for row in audit_rows(app)]


# --- Health and orphans ----------------------------------------------------------------------


def test_health_store_counts_webhooks_of_the_last_24_hours_only(env):
    now = utcnow()
    with env.app.app_context():
        assert health_store.last_webhook_at() is None
        assert health_store.count_events_by_type(now - timedelta(hours=24)) == {}
        db.session.add(
            WebhookEvent(event_id="old", event_type="OLD_TYPE", received_at=now - timedelta(days=2))
        )
        db.session.commit()
    webhook(env.client, "evt-1")
    webhook(env.client, "evt-2", event="SOMETHING_NEW", uac=OTHER_UAC)
    with env.app.app_context():
        last = health_store.last_webhook_at()
        # A status read back by a re-check is stored as an event, but it is not a webhook.
        reread = store.IncomingEvent("re", store.RECONCILED_EVENT, UAC, "verified", None, now)
        assert store.record_event(reread, {}) == "recorded"
        assert last is not None and now <= last <= utcnow()
        assert health_store.last_webhook_at() == last
        assert health_store.count_events_by_type(now - timedelta(hours=24)) == {
            "SELF_VERIFICATION_TRY_STATUS": 1,
            "SOMETHING_NEW": 1,
        }
        assert [e.event_id for e in health_store.list_orphans()] == ["evt-2"]


def test_health_page_shows_last_webhook_refusals_and_counts_by_type(env):
    assert "never" in env.client.get("/admin/health").text
    webhook(env.client, "evt-1")
    webhook(env.client, "evt-2", event="SOMETHING_NEW")
    webhook(env.client, "evt-3", event="SOMETHING_NEW", date="2025-03-15T00:00:00Z")
    assert env.client.post(HOOK, data="{}", content_type="text/plain").status_code == 415
    assert env.client.post(HOOK, data="nope", content_type="application/json").status_code == 400
    wrong = "/webhooks/authenticate/wrong-secret"
    assert env.client.post(wrong, data="{}", content_type="application/json").status_code == 404
    with env.app.app_context():
        last = utc_time(health_store.last_webhook_at())

    html = env.client.get("/admin/health").text

    assert f'<dd id="last-webhook">{last}</dd>' in html
    assert '<dd id="refused-4xx">3</dd>' in html
    assert '<dd id="refused-5xx">0</dd>' in html
    assert '<dd id="refused-by-code">400: 1, 404: 1, 415: 1</dd>' in html
    # memory:// storage: each process counts alone, and the page says so.
    assert "this process's counts since it started" in " ".join(html.split())
    assert row_for(html, "SELF_VERIFICATION_TRY_STATUS") == "1"
    assert row_for(html, "SOMETHING_NEW") == "2"


def test_health_page_counts_a_503_from_an_instance_whose_database_is_down(database_url, redis_url):
    """Two instances share Redis: one cannot reach its database, the other shows its 503."""
    down = create_app(base_config(UNREACHABLE_DB, RATELIMIT_STORAGE_URL=redis_url))
    app = make_app(database_url, RATELIMIT_STORAGE_URL=redis_url)
    client = app.test_client()
    actions = AdminActions(app, client)
    actions.create()
    assert actions.login().status_code == 303

    delivery = {
        "id": "evt-1",
        "event": "SELF_VERIFICATION_TRY_STATUS",
        "eventDate": "2025-03-14T16:05:09.412Z",
        "order": {"userAccessCode": UAC, "status": "verified"},
    }
    refused = down.test_client().post(HOOK, json=delivery)
    invalid = down.test_client().post(HOOK, data="nope", content_type="application/json")
    html = client.get("/admin/health").text

    assert (refused.status_code, invalid.status_code) == (503, 400)
    assert '<dd id="refused-4xx">1</dd>' in html
    assert '<dd id="refused-5xx">1</dd>' in html
    assert '<dd id="refused-by-code">400: 1, 503: 1</dd>' in html
    assert "in the shared rate-limit storage, across every instance" in html
    keys = redis.Redis.from_url(redis_url).keys("*webhook-refused*")
    assert len(keys) == 2
    for each in (down, app):
        with each.app_context():
            db.engine.dispose()


def test_health_lists_orphans_newest_first_fifty_a_page(env):
    add_orphans(env.app, PAGE_SIZE + 1)
    webhook(env.client, "not-an-orphan")

    first = env.client.get("/admin/health").text

    shown = re.findall(r"<code>(orphan-\d+)</code>", first)
    assert shown == [f"orphan-{n:03}" for n in range(PAGE_SIZE + 1, 1, -1)]
    assert OTHER_UAC in first and "not-an-orphan" not in first
    older = re.search(r'href="(/admin/health\?before=\d+)" rel="next"', first).group(1)
    second = env.client.get(older).text
    assert re.findall(r"<code>(orphan-\d+)</code>", second) == ["orphan-001"]
    assert 'rel="next"' not in second


# --- Audit log ---------------------------------------------------------------------------------


def test_audit_lists_sign_ins_failed_sign_ins_rechecks_and_links(
    app, admin, admin_client, fake_client, known
):
    assert admin.login(username="mallory", password="a wrong guess").status_code == 401
    admin_client.post(f"/admin/records/{UAC}/recheck")
    admin_client.post(f"/admin/records/{UAC}/link")

    html = admin_client.get("/admin/audit").text

    rows = re.findall(r"<tr>\s*<td>[^<]+</td>\s*<td>([^<]+)</td>\s*<td><code>([^<]+)</code>", html)
    assert rows == [
        (ADMIN_USERNAME, "link"),
        (ADMIN_USERNAME, "recheck"),
        ("(unknown user)", "login_failed"),
        (ADMIN_USERNAME, "login"),
    ]
    assert html.count(f'<a class="uuid" href="/admin/records/{UAC}">{UAC}</a>') == 2
    assert "no-link" in html  # the re-check's outcome, as its detail


def test_audit_pages_with_before(env):
    with env.app.app_context():
        for n in range(PAGE_SIZE + 4):
            admin_store.add_audit(ADMIN_USERNAME, "export", detail=f"export-{n:03}")

    first = env.client.get("/admin/audit").text

    assert "export-053" in first and "export-004" in first and "export-003" not in first
    older = re.search(r'href="(/admin/audit\?before=\d+)" rel="next"', first).group(1)
    second = env.client.get(older).text
    assert re.findall(r"export-\d+", second) == [
        "export-003",
        "export-002",
        "export-001",
        "export-000",
    ]
    assert "<code>login</code>" in second
    assert 'rel="next"' not in second


@pytest.mark.parametrize("path", ["/admin/audit", "/admin/health"])
@pytest.mark.parametrize("before", ["abc", "-1", "1.5", "１", "9" * 19])
def test_list_pages_refuse_a_malformed_cursor(admin_client, path, before):
    assert admin_client.get(path, query_string={"before": before}).status_code == 400


# --- Escaping and access ---------------------------------------------------------------------


def test_provider_text_is_escaped_on_record_health_and_audit_pages(app, admin, admin_client, known):
    webhook(admin_client, f"{SCRIPT}-1", status=SCRIPT, verificationMethod=SCRIPT)
    webhook(admin_client, "evt-2", event=SCRIPT)
    webhook(admin_client, "evt-3", uac=OTHER_UAC, status=SCRIPT)
    with app.app_context():
        admin_store.add_audit(ADMIN_USERNAME, "export", UAC, detail=SCRIPT)

    for path in (f"/admin/records/{UAC}", "/admin/health", "/admin/audit"):
        html = admin_client.get(path).text
        assert SCRIPT not in html, path
        assert ESCAPED in html, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"/admin/records/{UAC}"),
        ("post", f"/admin/records/{UAC}/recheck"),
        ("post", f"/admin/records/{UAC}/link"),
        ("get", "/admin/health"),
        ("get", "/admin/audit"),
    ],
)
def test_admin_record_pages_send_strangers_to_sign_in(client, fake_client, known, method, path):
    response = getattr(client, method)(path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/admin/login?next=")
    assert fake_client.links == []
