import json
import uuid

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError

from portal import create_app, store
from portal.extensions import db
from portal.helpers import status_signer
from portal.models import Submission, Verification, WebhookEvent
from tests.conftest import (
    POSTGRES_URL,
    TEST_WEBHOOK_SECRET,
    base_config,
    database_rows,
    make_app,
)

UAC = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
ORPHAN_UAC = "9d1e4c7a-2b3f-4e5d-8a6b-1c2d3e4f5a6b"
HOOK = f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}"
PREVIOUS_SECRET = "previous-webhook-secret-abcdefghijklmnopqrstuv"
UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/none"


def envelope(**changes):
    """A SELF_VERIFICATION_TRY_STATUS delivery as contract §10.3 describes it."""
    body = {
        "id": "b2f0c3de-6a1f-4c55-8e0b-4d9a2f1c7e30",
        "event": "SELF_VERIFICATION_TRY_STATUS",
        "eventDate": "2025-03-14T16:05:09.412Z",
        "order": {"userAccessCode": UAC, "status": "verified", "verificationMethod": "gov_id"},
    }
    body.update(changes)
    return body


def with_order(**changes):
    body = envelope()
    body["order"] = dict(body["order"], **changes)
    return body


def without(key, in_order=False):
    body = envelope()
    (body["order"] if in_order else body).pop(key)
    return body


def post(client, body, path=HOOK, content_type="application/json", **kwargs):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type, **kwargs)


@pytest.fixture
def hook_app(database_url):
    """An app on each backend that knows one pending verification, UAC."""
    app = make_app(database_url)
    with app.app_context():
        store.add_verification(UAC, "key-a")
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def hook_client(hook_app):
    return hook_app.test_client()


def event_count(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(WebhookEvent))


def state_of(app, uac=UAC):
    with app.app_context():
        record = store.get_verification(uac)
        return None if record is None else record.state


# --- accepted deliveries -----------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8"])
def test_webhook_records_a_delivery_and_moves_the_state(hook_app, hook_client, content_type):
    response = post(hook_client, envelope(), content_type=content_type)

    assert response.status_code == 200
    assert response.get_json() == {"outcome": "recorded"}
    with hook_app.app_context():
        record = store.get_verification(UAC)
        assert (record.state, record.raw_status, record.verification_method) == (
            "verified",
            "verified",
            "gov_id",
        )
        [row] = store.list_events(UAC)
        assert row.event_id == envelope()["id"]


def test_webhook_answers_duplicate_for_a_redelivery(hook_app, hook_client):
    post(hook_client, envelope())

    response = post(hook_client, envelope())

    assert response.get_json() == {"outcome": "duplicate"}
    assert event_count(hook_app) == 1


@pytest.mark.parametrize("event_type", ["USER_PII_UPDATE", "SOMETHING_NEW_IN_2027"])
def test_webhook_acknowledges_other_event_types_and_keeps_a_row(hook_app, hook_client, event_type):
    body = {"id": "evt-other", "event": event_type, "order": {"userAccessCode": UAC}}

    response = post(hook_client, body)

    assert response.status_code == 200
    assert response.get_json() == {"outcome": "ignored"}
    assert event_count(hook_app) == 1
    assert state_of(hook_app) == "pending"


def test_webhook_keeps_an_orphan_row_and_creates_nothing_else(hook_app, hook_client):
    response = post(hook_client, with_order(userAccessCode=ORPHAN_UAC))

    assert response.status_code == 200
    assert response.get_json() == {"outcome": "orphan"}
    with hook_app.app_context():
        [row] = db.session.scalars(select(WebhookEvent)).all()
        assert (row.user_access_code, row.orphan) == (ORPHAN_UAC, True)
        assert db.session.scalar(select(func.count()).select_from(Verification)) == 1
        assert db.session.scalar(select(func.count()).select_from(Submission)) == 1
        assert store.get_verification(ORPHAN_UAC) is None
    assert state_of(hook_app) == "pending"


@pytest.mark.parametrize("uac", [UAC, ORPHAN_UAC])
def test_webhook_stores_only_allow_listed_fields(hook_app, hook_client, uac):
    body = with_order(
        userAccessCode=uac,
        firstName="Zqcanary",
        lastName="Zqcanary-Okafor",
        dob="07-11-1988",
        address={"street": "1 Zqcanary Lane"},
    )
    body.update(email="zqcanary@example.org", phone="+1 555 0100 Zqcanary", user={"n": "Zqcanary"})

    response = post(hook_client, body)

    assert response.status_code == 200
    assert event_count(hook_app) == 1
    with hook_app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(select(table)).all():
                for value in row:
                    assert "zqcanary" not in str(value).lower(), table.name
                    assert "1988" not in str(value), table.name


def test_webhook_needs_no_csrf_token_when_csrf_is_enabled(database_url):
    app = make_app(database_url, WTF_CSRF_ENABLED=True)
    client = app.test_client()
    with app.app_context():
        store.add_verification(UAC, "key-a")

    form = client.post("/", data={"first_name": "Dana"})
    response = post(client, envelope())

    assert form.status_code == 400  # CSRF really is on for the form
    assert response.status_code == 200
    assert response.get_json() == {"outcome": "recorded"}
    assert state_of(app) == "verified"
    with app.app_context():
        db.engine.dispose()


# --- the secret path ---------------------------------------------------------------------


def without_request_id(headers):
    return [(name, value) for name, value in headers if name != "X-Request-ID"]


@pytest.mark.parametrize(
    "path",
    [
        f"{HOOK}x",
        HOOK[:-1],
        f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET.upper()}",
        "/webhooks/authenticate/wrong",
        "/webhooks/authenticate/None",
        f"/webhooks/authenticate/{PREVIOUS_SECRET}",
    ],
)
def test_webhook_wrong_secret_looks_exactly_like_an_unknown_path(hook_app, hook_client, path):
    unknown = post(hook_client, envelope(), path="/webhooks/nope")
    before = database_rows(hook_app)

    response = post(hook_client, envelope(), path=path)

    assert response.status_code == unknown.status_code == 404
    assert response.data == unknown.data
    # Every response gets its own random request id; every other header must match.
    assert without_request_id(response.headers) == without_request_id(unknown.headers)
    assert database_rows(hook_app) == before


@pytest.mark.parametrize(
    ("secret", "status_code"),
    [
        (TEST_WEBHOOK_SECRET, 200),
        (PREVIOUS_SECRET, 200),
        ("some-other-secret-0123456789abcdef", 404),
    ],
)
def test_webhook_accepts_the_previous_secret_while_rotating(database_url, secret, status_code):
    app = make_app(database_url, WEBHOOK_PREVIOUS_SECRET=PREVIOUS_SECRET)
    with app.app_context():
        store.add_verification(UAC, "key-a")

    response = post(app.test_client(), envelope(), path=f"/webhooks/authenticate/{secret}")

    assert response.status_code == status_code
    assert event_count(app) == (1 if status_code == 200 else 0)
    with app.app_context():
        db.engine.dispose()


# --- refused deliveries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", json.dumps(envelope())),
        ("application/x-www-form-urlencoded", "id=evt-1&event=SELF_VERIFICATION_TRY_STATUS"),
        (
            "multipart/form-data; boundary=zz",
            '--zz\r\nContent-Disposition: form-data; name="id"\r\n\r\n1\r\n--zz--\r\n',
        ),
        ("application/jsonp", json.dumps(envelope())),
    ],
)
def test_webhook_refuses_bodies_that_are_not_json_with_415(
    hook_app, hook_client, content_type, data
):
    before = database_rows(hook_app)

    response = post(hook_client, data, content_type=content_type)

    assert response.status_code == 415
    assert "application/json" in response.get_json()["error"]
    assert database_rows(hook_app) == before


def test_webhook_refuses_a_form_post_with_415(hook_app, hook_client):
    before = database_rows(hook_app)

    response = hook_client.post(HOOK, data={"id": "evt-1", "event": "SELF_VERIFICATION_TRY_STATUS"})

    assert response.status_code == 415
    assert database_rows(hook_app) == before


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param("{not json", "JSON", id="not-json"),
        pytest.param("", "JSON", id="empty"),
        pytest.param(b"\xff\xfe{", "JSON", id="not-utf8"),
        pytest.param([envelope()], "body must be a JSON object", id="array"),
        pytest.param("null", "body must be a JSON object", id="null"),
        pytest.param(without("id"), "id must be a non-empty string", id="no-id"),
        pytest.param(without("event"), "event must be a non-empty string", id="no-event"),
        pytest.param(without("order"), "order must be an object", id="no-order"),
        pytest.param(
            without("userAccessCode", in_order=True),
            "userAccessCode must be a non-empty string",
            id="no-uac",
        ),
        pytest.param(
            without("status", in_order=True), "status must be a non-empty string", id="no-status"
        ),
        pytest.param(without("eventDate"), "eventDate must be an ISO 8601 string", id="no-date"),
        pytest.param(envelope(id=12345), "id must be a non-empty string", id="id-number"),
        pytest.param(envelope(id="  "), "id must be a non-empty string", id="id-blank"),
        pytest.param(envelope(order="verified"), "order must be an object", id="order-string"),
        pytest.param(
            with_order(status=["verified"]), "status must be a non-empty string", id="status-list"
        ),
        pytest.param(with_order(status=""), "status must be a non-empty string", id="status-empty"),
        pytest.param(
            with_order(verificationMethod=7),
            "verificationMethod must be a non-empty string",
            id="method-number",
        ),
        pytest.param(
            envelope(eventDate="yesterday"), "eventDate is not an ISO 8601 date", id="date-words"
        ),
        pytest.param(
            envelope(eventDate="2025-13-40T00:00:00Z"),
            "eventDate is not an ISO 8601 date",
            id="date-impossible",
        ),
        pytest.param(
            envelope(eventDate=1741968309), "eventDate must be an ISO 8601 string", id="date-number"
        ),
        pytest.param(envelope(id="e" * 101), "id is longer than 100 characters", id="id-long"),
        pytest.param(
            envelope(event="E" * 65), "event is longer than 64 characters", id="event-long"
        ),
        pytest.param(
            with_order(userAccessCode=UAC + "0"),
            "userAccessCode is longer than 36 characters",
            id="uac-long",
        ),
        pytest.param(
            with_order(status="s" * 101), "status is longer than 100 characters", id="status-long"
        ),
        pytest.param(
            with_order(verificationMethod="m" * 101),
            "verificationMethod is longer than 100 characters",
            id="method-long",
        ),
    ],
)
def test_webhook_refuses_a_malformed_delivery_with_400_and_a_reason(
    hook_app, hook_client, body, reason
):
    before = database_rows(hook_app)

    response = post(hook_client, body)

    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert database_rows(hook_app) == before


def padded(size):
    """A valid delivery of exactly `size` bytes."""
    body = envelope(padding="")
    body["padding"] = "x" * (size - len(json.dumps(body)))
    data = json.dumps(body)
    assert len(data) == size
    return data


@pytest.mark.parametrize(
    ("limit", "size", "status_code"),
    [
        (None, 64 * 1024, 200),
        (None, 64 * 1024 + 1, 413),
        (None, 1024 * 1024, 413),
        (1024, 1024, 200),
        (1024, 1025, 413),
    ],
)
def test_webhook_refuses_a_body_over_the_size_limit_with_413(
    database_url, limit, size, status_code
):
    config = {} if limit is None else {"WEBHOOK_MAX_BYTES": limit}
    app = make_app(database_url, **config)
    with app.app_context():
        store.add_verification(UAC, "key-a")

    before = database_rows(app)

    response = post(app.test_client(), padded(size))

    assert response.status_code == status_code
    if status_code == 200:
        assert (event_count(app), state_of(app)) == (1, "verified")
    else:
        assert database_rows(app) == before
    with app.app_context():
        db.engine.dispose()


# --- database trouble --------------------------------------------------------------------


def test_webhook_answers_503_when_the_database_is_unreachable_then_a_retry_records_once(
    database_url,
):
    down = create_app(
        base_config(
            UNREACHABLE_DB, SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}}
        )
    )
    working = make_app(database_url)
    with working.app_context():
        store.add_verification(UAC, "key-a")

    refused = post(down.test_client(), envelope())
    retried = post(working.test_client(), envelope())
    again = post(working.test_client(), envelope())

    assert refused.status_code == 503
    assert "retry" in refused.get_json()["error"]
    assert (retried.status_code, retried.get_json()) == (200, {"outcome": "recorded"})
    assert again.get_json() == {"outcome": "duplicate"}
    assert event_count(working) == 1
    assert state_of(working) == "verified"
    for app in (down, working):
        with app.app_context():
            db.engine.dispose()


def test_webhook_answers_503_on_a_database_error_and_keeps_nothing(
    hook_app, hook_client, monkeypatch
):
    def database_down(event, table):
        raise OperationalError("INSERT ...", {}, Exception("server closed the connection"))

    before = database_rows(hook_app)
    with monkeypatch.context() as patched:
        patched.setattr(store, "record_event", database_down)
        refused = post(hook_client, envelope())

    assert refused.status_code == 503
    assert database_rows(hook_app) == before

    retried = post(hook_client, envelope())

    assert retried.get_json() == {"outcome": "recorded"}
    assert event_count(hook_app) == 1
    assert state_of(hook_app) == "verified"


def end_connections(application_name):
    """Make the server end every connection an app holds, as a database restart does."""
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        ended = connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name"
            ),
            {"name": application_name},
        ).all()
    admin.dispose()
    return len(ended)


@pytest.mark.postgres
def test_webhook_and_status_poll_recover_from_stale_pooled_connections(postgres_url):
    name = f"portal-test-{uuid.uuid4().hex[:12]}"
    options = {"hide_parameters": True, "connect_args": {"application_name": name}}
    app = make_app(postgres_url, SQLALCHEMY_ENGINE_OPTIONS=options)
    client = app.test_client()
    with app.app_context():
        store.add_verification(UAC, "key-a")
        token = status_signer().dumps(UAC)
    started = with_order(status="started")
    started["id"] = "evt-before"
    assert post(client, started).status_code == 200  # leaves connections in the pool

    assert end_connections(name) >= 1
    delivered = post(client, envelope(id="evt-after"))

    assert (delivered.status_code, delivered.get_json()) == (200, {"outcome": "recorded"})
    assert end_connections(name) >= 1
    polled = client.get(f"/status/{token}.json")

    assert (polled.status_code, polled.get_json()["state"]) == (200, "verified")
    assert event_count(app) == 2
    with app.app_context():
        db.engine.dispose()


# --- bugs --------------------------------------------------------------------------------


@pytest.fixture
def quiet_app(sqlite_url):
    """An app that answers 500 for an unhandled error, as production does, instead of raising."""
    app = make_app(sqlite_url, PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        store.add_verification(UAC, "key-a")
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("date", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_webhook_refuses_an_event_date_out_of_range_with_400(quiet_app, date):
    before = database_rows(quiet_app)

    response = post(quiet_app.test_client(), envelope(eventDate=date))

    assert response.status_code == 400
    assert database_rows(quiet_app) == before


def test_webhook_refuses_deeply_nested_json_with_400(quiet_app):
    before = database_rows(quiet_app)

    response = post(quiet_app.test_client(), "[" * 20000 + "]" * 20000)

    assert response.status_code == 400
    assert database_rows(quiet_app) == before


@pytest.mark.postgres
def test_webhook_refuses_a_nul_character_with_400_on_postgres(postgres_url):
    app = make_app(postgres_url)
    with app.app_context():
        store.add_verification(UAC, "key-a")
    before = database_rows(app)
    try:
        response = post(app.test_client(), envelope(id="evt-\u0000-1"))

        assert response.status_code == 400
        assert database_rows(app) == before
    finally:
        with app.app_context():
            db.engine.dispose()
