"""Optional HMAC signatures and the rate limit on webhook intake."""

import hashlib
import hmac
import json
import time

import pytest
import requests
from sqlalchemy import func, select

from portal import store
from portal.extensions import db
from portal.models import WebhookEvent
from tests.conftest import TEST_WEBHOOK_SECRET, database_rows, make_app
from tests.test_integration import complete_medallion, onboard, uuid_behind

UAC = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
HOOK = f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}"
HMAC_SECRET = "hmac-secret-for-tests"


def body(event_id="evt-1"):
    return json.dumps(
        {
            "id": event_id,
            "event": "SELF_VERIFICATION_TRY_STATUS",
            "eventDate": "2026-03-14T16:05:09.412Z",
            "order": {"userAccessCode": UAC, "status": "verified", "verificationMethod": "id"},
        }
    ).encode()


def sign(raw, secret=HMAC_SECRET, stamp=None):
    message = f"{stamp}.".encode() + raw if stamp is not None else raw
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def stored_events(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(WebhookEvent))


@pytest.fixture
def signed_app(sqlite_url):
    app = make_app(sqlite_url, WEBHOOK_HMAC_SECRET=HMAC_SECRET)
    with app.app_context():
        store.add_verification(UAC, "key-1")
    return app


def post(app, raw, headers):
    return app.test_client().post(
        HOOK, data=raw, headers={"Content-Type": "application/json", **headers}
    )


def test_signed_webhook_is_recorded_when_the_signature_matches(signed_app):
    raw = body()
    response = post(signed_app, raw, {"X-Authenticate-Signature": sign(raw)})
    assert response.status_code == 200
    assert response.json == {"outcome": "recorded"}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "signature does not match"),
        ({"X-Authenticate-Signature": "sha256=" + "0" * 64}, "signature does not match"),
        ({"X-Authenticate-Signature": sign(body(), secret="other")}, "signature does not match"),
        ({"X-Authenticate-Signature": sign(body("evt-2"))}, "signature does not match"),
    ],
)
def test_signed_webhook_is_refused_with_401_when_the_signature_is_wrong(
    signed_app, headers, reason
):
    before = database_rows(signed_app)
    response = post(signed_app, body(), headers)
    assert response.status_code == 401
    assert response.json == {"error": reason}
    assert database_rows(signed_app) == before


def test_unsigned_webhooks_are_accepted_when_no_hmac_secret_is_set(app):
    with app.app_context():
        store.add_verification(UAC, "key-1")
    assert post(app, body(), {}).status_code == 200


@pytest.mark.parametrize(("offset", "status"), [(0, 200), (-250, 200), (-400, 401), (400, 401)])
def test_timestamped_signature_is_checked_against_the_tolerance(sqlite_url, offset, status):
    app = make_app(
        sqlite_url,
        WEBHOOK_HMAC_SECRET=HMAC_SECRET,
        WEBHOOK_HMAC_TIMESTAMP_HEADER="X-Authenticate-Timestamp",
        WEBHOOK_HMAC_TOLERANCE=300,
    )
    stamp = int(time.time()) + offset
    raw = body()
    headers = {
        "X-Authenticate-Signature": sign(raw, stamp=stamp),
        "X-Authenticate-Timestamp": str(stamp),
    }
    before = database_rows(app)
    assert post(app, raw, headers).status_code == status
    if status == 200:
        assert stored_events(app) == 1
    else:
        assert database_rows(app) == before


def test_timestamped_signature_is_refused_without_a_timestamp(sqlite_url):
    app = make_app(
        sqlite_url,
        WEBHOOK_HMAC_SECRET=HMAC_SECRET,
        WEBHOOK_HMAC_TIMESTAMP_HEADER="X-Authenticate-Timestamp",
    )
    before = database_rows(app)
    response = post(app, body(), {"X-Authenticate-Signature": sign(body())})
    assert response.status_code == 401
    assert "X-Authenticate-Timestamp must be a Unix timestamp" in response.json["error"]
    assert database_rows(app) == before


def test_webhook_rate_limit_never_throttles_accepted_deliveries(sqlite_url):
    app = make_app(sqlite_url, WEBHOOK_RATE_LIMIT="3 per minute")
    client = app.test_client()
    answers = [
        client.post(HOOK, data=body(f"evt-{n}"), content_type="application/json").status_code
        for n in range(8)
    ]
    assert answers == [200] * 8
    assert stored_events(app) == 8


def test_webhook_rate_limit_stops_an_address_that_keeps_sending_garbage(sqlite_url):
    app = make_app(sqlite_url, WEBHOOK_RATE_LIMIT="3 per minute")
    client = app.test_client()
    before = database_rows(app)
    garbage = [
        client.post(HOOK, data="nope", content_type="application/json").status_code
        for _ in range(4)
    ]
    good = client.post(HOOK, data=body(), content_type="application/json").status_code
    assert garbage == [400, 400, 400, 429]
    assert good == 429
    assert database_rows(app) == before


def test_rate_limit_also_counts_wrong_secret_guesses(sqlite_url):
    app = make_app(sqlite_url, WEBHOOK_RATE_LIMIT="2 per minute")
    client = app.test_client()
    before = database_rows(app)
    guesses = [
        client.post(
            f"/webhooks/authenticate/guess-{n}", data=body(), content_type="application/json"
        ).status_code
        for n in range(3)
    ]
    assert guesses == [404, 404, 429]
    assert database_rows(app) == before


@pytest.fixture
def sandbox_config():
    return {
        "WEBHOOK_BACKOFF": 0.05,
        "WEBHOOK_HMAC_SECRET": HMAC_SECRET,
        "WEBHOOK_HMAC_TIMESTAMP_HEADER": "X-Authenticate-Timestamp",
    }


@pytest.fixture
def portal_config():
    return {
        "WEBHOOK_HMAC_SECRET": HMAC_SECRET,
        "WEBHOOK_HMAC_TIMESTAMP_HEADER": "X-Authenticate-Timestamp",
        "WEBHOOK_HMAC_TOLERANCE": 300,
    }


def test_sandbox_signed_deliveries_are_accepted_end_to_end(live):
    with requests.Session() as session:
        link, _ = onboard(live, session)
        complete_medallion(session, link, "failed")
    assert live.wait_for_state(uuid_behind(live, link), "failed") == "failed"


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_get_404_without_the_secret_and_405_with_it(app, method):
    client = app.test_client()
    before = database_rows(app)
    assert getattr(client, method)("/webhooks/authenticate/wrong-guess").status_code == 404
    assert getattr(client, method)(HOOK).status_code == 405
    assert database_rows(app) == before
