"""Tests for the local Authenticate emulator (portal.sandbox)."""

import logging
import os
import re
import socket
import threading
import time
import uuid

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from portal.sandbox import create_app, serve

AUTH = {"Authorization": "Bearer sandbox-api-key"}
PERSON = {"firstName": "Dana", "lastName": "Okafor", "dob": "07-11-1988", "email": "d@example.org"}
EVENT_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
FIXTURE_UAC = "100385a1-4308-49db-889f-9a898fa88c21"


def wait_until(predicate, timeout=5.0):
    """Poll predicate until it returns something truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError("condition not met before the deadline")


def is_uuid4(value):
    return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


class SilentHandler(WSGIRequestHandler):
    def log_request(self, *args):
        """Keep the receiver out of the access log the sandbox's own lines are checked in."""


class Receiver:
    """A real HTTP webhook endpoint that records JSON bodies and answers scripted statuses."""

    def __init__(self, statuses=(), delay=0.0):
        self.statuses = list(statuses)
        self.delay = delay
        self.bodies = []
        self.mimetypes = []
        self.lock = threading.Lock()
        self.server = make_server(
            "127.0.0.1", 0, self.wsgi, threaded=True, request_handler=SilentHandler
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.port}/hook"

    def wsgi(self, environ, start_response):
        request = Request(environ)
        time.sleep(self.delay)
        with self.lock:
            self.bodies.append(request.get_json(silent=True))
            self.mimetypes.append(request.mimetype)
            status = self.statuses.pop(0) if self.statuses else 200
        return Response("{}", status=status, mimetype="application/json")(environ, start_response)

    def wait_for(self, count):
        wait_until(lambda: len(self.bodies) >= count)
        time.sleep(0.05)  # long enough to catch an unexpected extra delivery
        with self.lock:
            return list(self.bodies)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SANDBOX_"):
            monkeypatch.delenv(key)


@pytest.fixture
def make_app():
    apps = []

    def make(**config):
        settings = {"TESTING": True, "WEBHOOK_BACKOFF": 0.01, "WEBHOOK_TIMEOUT": 2, **config}
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for app in apps:
        app.extensions["sandbox.deliverer"].stop()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_receiver():
    receivers = []

    def make(statuses=(), delay=0.0):
        receivers.append(Receiver(statuses, delay))
        return receivers[-1]

    yield make
    for receiver in receivers:
        receiver.close()


def create_user(client, **fields):
    response = client.post("/user/create", json={**PERSON, **fields}, headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json["userAccessCode"]


def issue_token(client, code=None, **body):
    code = code or create_user(client)
    response = client.post("/user/jwt", json={"userAccessCode": code, **body}, headers=AUTH)
    assert response.status_code == 200, response.json
    return response.json["token"]


def choose(client, token, outcome, **extra):
    return client.post("/medallion/complete", data={"token": token, "outcome": outcome, **extra})


def run_flow(client, outcome="verified", query="", **jwt_body):
    token = issue_token(client, **jwt_body)
    assert client.get(f"/?token={token}{query}").status_code == 200
    extra = dict(part.split("=") for part in query.strip("&").split("&") if part)
    assert choose(client, token, outcome, **extra).status_code in (200, 303)
    return token


def deliveries(client):
    return client.get("/_sandbox/deliveries").json["deliveries"]


# --- configuration -----------------------------------------------------------------------


def test_create_app_uses_documented_defaults(app):
    assert app.config["API_KEY"] == "sandbox-api-key"
    assert app.config["WEBHOOK_URL"] == ()
    assert app.config["STATUS_STARTED"] == "started"
    assert app.config["VERIFICATION_METHOD"] == "governmentId"
    assert app.config["TOKEN_TTL"] == 86400
    assert app.config["WEBHOOK_MAX_ATTEMPTS"] == 6
    assert app.config["WEBHOOK_DUPLICATES"] is False


def test_create_app_reads_sandbox_environment_variables(monkeypatch, make_app):
    monkeypatch.setenv("SANDBOX_API_KEY", "123")
    monkeypatch.setenv("SANDBOX_TOKEN_TTL", "60")
    monkeypatch.setenv("SANDBOX_WEBHOOK_REORDER", "yes")
    monkeypatch.setenv("SANDBOX_STATUS_VERIFIED", "COMPLETED")
    app = make_app()
    assert app.config["API_KEY"] == "123"
    assert app.config["TOKEN_TTL"] == 60
    assert app.config["WEBHOOK_REORDER"] is True
    assert app.config["STATUS_VERIFIED"] == "COMPLETED"


def test_create_app_config_mapping_overrides_environment(monkeypatch, make_app):
    monkeypatch.setenv("SANDBOX_TOKEN_TTL", "60")
    assert make_app(TOKEN_TTL=5).config["TOKEN_TTL"] == 5


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WEBHOOK_URL", "ftp://x"),
        ("WEBHOOK_URL", "http://a.test/hook ftp://x"),
        ("WEBHOOK_URL", 5),
        ("TOKEN_TTL", -1),
    ],
)
def test_create_app_rejects_invalid_settings(key, value):
    with pytest.raises(ValueError, match=key):
        create_app({key: value})


@pytest.mark.parametrize(
    "value",
    ["http://a.test/hook http://b.test/hook", "http://a.test/hook, http://b.test/hook"],
)
def test_create_app_reads_several_webhook_urls(monkeypatch, make_app, value):
    monkeypatch.setenv("SANDBOX_WEBHOOK_URL", value)
    assert make_app().config["WEBHOOK_URL"] == ("http://a.test/hook", "http://b.test/hook")


# --- authentication and bodies -------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic sandbox-api-key"}],
)
def test_api_rejects_missing_or_wrong_bearer_key(client, headers):
    response = client.post("/user/create", json=PERSON, headers=headers)
    assert response.status_code == 401
    assert response.json["errorMessage"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/user/jwt"), ("post", "/company/webhook"), ("get", "/user/medallion/x/status")],
)
def test_api_requires_bearer_key_on_every_path(client, method, path):
    response = getattr(client, method)(path, json={})
    assert response.status_code == 401


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_mock_paths_accept_requests_without_a_valid_key(client, headers):
    response = client.post("/mock/user/create", json=PERSON, headers=headers)
    assert response.status_code == 200
    assert is_uuid4(response.json["userAccessCode"])


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("not json", "application/json"), ('{"a": 1}', "text/plain"), ("[1, 2]", "application/json")],
)
def test_api_rejects_body_that_is_not_a_json_object(client, data, content_type):
    response = client.post("/user/create", data=data, content_type=content_type, headers=AUTH)
    assert response.status_code == 400
    assert "JSON object" in response.json["errorMessage"]


def test_api_answers_unknown_routes_with_json_error(client):
    response = client.post("/user/medallion/link", json={}, headers=AUTH)
    assert response.status_code == 404
    assert response.json["errorMessage"]


def test_api_waits_response_delay_before_answering(make_app):
    client = make_app(RESPONSE_DELAY=0.05).test_client()
    started = time.monotonic()
    client.post("/mock/user/create", json=PERSON)
    assert time.monotonic() - started >= 0.05


# --- POST /user/create ---------------------------------------------------------------------


def test_create_user_rejects_missing_first_name(client):
    body = {key: value for key, value in PERSON.items() if key != "firstName"}
    response = client.post("/user/create", json=body, headers=AUTH)
    assert response.status_code == 400
    assert "firstName" in response.json["errorMessage"]


@pytest.mark.parametrize("field", ["firstName", "lastName", "dob", "email"])
@pytest.mark.parametrize("value", ["", "   ", None, 42, ["x"]])
def test_create_user_rejects_empty_null_or_non_string_required_field(client, field, value):
    response = client.post("/user/create", json={**PERSON, field: value}, headers=AUTH)
    assert response.status_code == 400
    assert field in response.json["errorMessage"]


@pytest.mark.parametrize(
    "dob",
    [
        "1988-11-07",
        "7-11-1988",
        "07/11/1988",
        "31-02-2001",
        "29-02-2001",
        "07-13-1988",
        "00-01-2000",
        "07-11-88",
        "07-11-1988 ",
        "\u0660\u0667-11-1988",
    ],
)
def test_create_user_rejects_dob_not_a_real_dd_mm_yyyy_date(client, dob):
    response = client.post("/user/create", json={**PERSON, "dob": dob}, headers=AUTH)
    assert response.status_code == 400
    assert "DD-MM-YYYY" in response.json["errorMessage"]


def test_create_user_accepts_leap_day(client):
    assert is_uuid4(create_user(client, dob="29-02-2000"))


def test_create_user_returns_new_uuid_on_every_call(client):
    first, second = create_user(client), create_user(client)
    assert first != second
    assert is_uuid4(first) and is_uuid4(second)
    assert client.get("/_sandbox/users").json == {"count": 2, "userAccessCodes": [first, second]}


def test_sandbox_users_exposes_no_personal_data(client):
    create_user(client)
    text = client.get("/_sandbox/users").text
    assert "Dana" not in text and "Okafor" not in text and "1988" not in text


# --- POST /user/jwt ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"userAccessCode": ""}, {"userAccessCode": 7}])
def test_jwt_rejects_missing_user_access_code(client, body):
    response = client.post("/user/jwt", json=body, headers=AUTH)
    assert response.status_code == 400


def test_jwt_rejects_unknown_user_access_code(client):
    response = client.post("/user/jwt", json={"userAccessCode": str(uuid.uuid4())}, headers=AUTH)
    assert response.status_code == 400
    assert "not found" in response.json["errorMessage"]


def test_jwt_returns_long_jwt_and_new_token_each_call(client):
    code = create_user(client)
    first = client.post("/user/jwt", json={"userAccessCode": code}, headers=AUTH).json
    second = client.post("/user/jwt", json={"userAccessCode": code}, headers=AUTH).json
    assert is_uuid4(first["token"]) and first["token"] != second["token"]
    assert len(first["jwt"]) > 64 and first["jwt"].count(".") == 2


@pytest.mark.parametrize(
    "url",
    [
        "https://portal.example.org/done?ref=1",
        "http://localhost:5000/done",
        "http://127.0.0.1/x",
        "http://127.8.9.10:8000/x",
        "http://[::1]:5000/x",
    ],
)
def test_jwt_accepts_https_or_loopback_http_redirect(client, url):
    response = client.post(
        "/user/jwt", json={"userAccessCode": create_user(client), "redirectURL": url}, headers=AUTH
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "http://portal.example.org/done",
        "http://10.0.0.5/x",
        "ftp://example.org/",
        "https://",
        "portal.example.org/done",
        "",
        "http://localhost.example.org/",
    ],
)
def test_jwt_rejects_non_https_redirect_with_403(client, url):
    response = client.post(
        "/user/jwt", json={"userAccessCode": create_user(client), "redirectURL": url}, headers=AUTH
    )
    assert response.status_code == 403
    assert "https" in response.json["errorMessage"]


@pytest.mark.parametrize("field", ["redirectURL", "preferredWorkflowID"])
def test_jwt_rejects_non_string_optional_fields(client, field):
    response = client.post(
        "/user/jwt", json={"userAccessCode": create_user(client), field: 5}, headers=AUTH
    )
    assert response.status_code == 400


@pytest.mark.parametrize("outcome", ["verified", "failed"])
def test_jwt_refuses_user_who_already_completed(client, outcome):
    token = run_flow(client, outcome)
    code = client.get(f"/user/medallion/{token}/status", headers=AUTH).json["userAccessCode"]
    response = client.post("/user/jwt", json={"userAccessCode": code}, headers=AUTH)
    assert response.status_code == 400
    assert "already completed" in response.json["errorMessage"]


@pytest.mark.parametrize("outcome", ["review", "abandoned"])
def test_jwt_allows_new_link_after_review_or_abandon(client, outcome):
    token = run_flow(client, outcome)
    code = client.get(f"/user/medallion/{token}/status", headers=AUTH).json["userAccessCode"]
    assert client.post("/user/jwt", json={"userAccessCode": code}, headers=AUTH).status_code == 200


def test_jwt_accepts_mock_fixture_code_only_under_mock(client):
    body = {"userAccessCode": FIXTURE_UAC}
    assert client.post("/user/jwt", json=body, headers=AUTH).status_code == 400
    assert client.post("/mock/user/jwt", json=body).status_code == 200


# --- GET /user/medallion/<token>/status ----------------------------------------------------


def test_status_returns_404_for_unknown_token(client):
    response = client.get(f"/user/medallion/{uuid.uuid4()}/status", headers=AUTH)
    assert response.status_code == 404
    assert response.json["errorMessage"]


def test_status_tracks_started_then_outcome(client):
    code = create_user(client)
    token = issue_token(client, code)
    url = f"/mock/user/medallion/{token}/status"
    fresh = client.get(url).json
    assert fresh["token"] == token and fresh["userAccessCode"] == code
    assert (fresh["status"], fresh["verificationMethod"], fresh["attempts"]) == (None, None, 0)
    assert fresh["expired"] is False
    client.get(f"/?token={token}")
    assert client.get(url).json["status"] == "started"
    choose(client, token, "review")
    after = client.get(url).json
    assert (after["status"], after["verificationMethod"], after["attempts"]) == (
        "review",
        "governmentId",
        1,
    )


def test_status_reports_expired_token(make_app):
    client = make_app(TOKEN_TTL=0).test_client()
    token = issue_token(client)
    assert client.get(f"/user/medallion/{token}/status", headers=AUTH).json["expired"] is True


# --- the Medallion page --------------------------------------------------------------------


def test_medallion_page_shows_every_outcome_in_one_post_form(client):
    token = issue_token(client)
    response = client.get(f"/?token={token}")
    assert response.status_code == 200
    html = response.text
    assert 'name="viewport"' in html and html.count("<form") == 1
    assert 'action="/medallion/complete"' in html and f'value="{token}"' in html
    for value, label in [
        ("verified", "Verified"),
        ("failed", "Failed"),
        ("review", "Needs review"),
        ("abandoned", "Abandoned"),
    ]:
        assert f'value="{value}"' in html and label in html
    assert "<script" not in html and "style=" not in html


def test_medallion_page_accepts_jwt_instead_of_token(client):
    code = create_user(client)
    jwt = client.post("/user/jwt", json={"userAccessCode": code}, headers=AUTH).json["jwt"]
    assert client.get(f"/?token={jwt}").status_code == 200


@pytest.mark.parametrize("query", ["", "?token=", "?token=nope", f"?token={uuid.uuid4()}"])
def test_medallion_page_shows_404_page_for_missing_or_unknown_token(client, query):
    response = client.get(f"/{query}")
    assert response.status_code == 404
    assert response.mimetype == "text/html" and "<h1>" in response.text


def test_medallion_page_shows_410_page_for_expired_token(make_app):
    client = make_app(TOKEN_TTL=0).test_client()
    response = client.get(f"/?token={issue_token(client)}")
    assert response.status_code == 410 and "expired" in response.text


def test_medallion_page_shows_410_page_once_completed(client):
    token = run_flow(client, "verified")
    assert client.get(f"/?token={token}").status_code == 410
    assert choose(client, token, "failed").status_code == 410


def test_medallion_choice_redirects_to_redirect_url_with_303(client):
    token = issue_token(client, redirectURL="https://portal.example.org/back?ref=a1")
    client.get(f"/?token={token}")
    response = choose(client, token, "verified")
    assert response.status_code == 303
    assert response.headers["Location"] == "https://portal.example.org/back?ref=a1"


def test_medallion_choice_without_redirect_says_close_page(client):
    token = issue_token(client)
    response = choose(client, token, "abandoned")
    assert response.status_code == 200 and "You can close this page" in response.text


@pytest.mark.parametrize("token_value", ["", "unknown"])
def test_medallion_choice_rejects_unknown_token(client, token_value):
    assert choose(client, token_value, "verified").status_code == 404


def test_medallion_choice_rejects_unknown_outcome(client):
    response = choose(client, issue_token(client), "approved")
    assert response.status_code == 400 and "<h1>" in response.text


def test_medallion_page_carries_delivery_flags_into_form(client):
    token = issue_token(client)
    html = client.get(f"/?token={token}&duplicates=1&reorder=1").text
    assert 'name="duplicates" value="1"' in html and 'name="reorder" value="1"' in html


def test_medallion_page_hardens_headers_and_serves_stylesheet(client):
    response = client.get(f"/?token={issue_token(client)}")
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/medallion.css").mimetype == "text/css"


def test_medallion_page_queues_started_event_on_first_view_only(client):
    token = issue_token(client)
    client.get(f"/?token={token}")
    client.get(f"/?token={token}")
    assert [entry["status"] for entry in deliveries(client)] == ["started"]


def test_medallion_page_skips_started_event_when_status_started_empty(make_app):
    client = make_app(STATUS_STARTED="").test_client()
    run_flow(client, "failed")
    assert [entry["status"] for entry in deliveries(client)] == ["failed"]


def test_deliveries_are_skipped_without_webhook_url(client):
    run_flow(client, "verified")
    wait_until(lambda: all(entry["state"] == "skipped" for entry in deliveries(client)))
    log = deliveries(client)
    assert [entry["status"] for entry in log] == ["started", "verified"]
    assert all(entry["attempts"] == 0 and entry["httpStatus"] is None for entry in log)


# --- webhooks over real HTTP ---------------------------------------------------------------


def test_company_webhook_subscription_sets_delivery_url(client, make_receiver):
    receiver = make_receiver()
    body = {"companyAccessCode": "company-1", "webhookURL": receiver.url}
    response = client.post("/company/webhook", json=body, headers=AUTH)
    assert response.status_code == 200 and response.json == {"success": True}
    run_flow(client, "verified")
    assert [b["order"]["status"] for b in receiver.wait_for(2)] == ["started", "verified"]


@pytest.mark.parametrize("url", [None, "", "ftp://example.org/hook", "example.org/hook", 5])
def test_company_webhook_rejects_missing_or_non_http_url(client, url):
    body = {"companyAccessCode": "company-1", "webhookURL": url}
    response = client.post("/mock/company/webhook", json=body)
    assert response.status_code == 400 and "webhookURL" in response.json["errorMessage"]


def test_webhook_envelope_matches_contract(make_app, make_receiver):
    receiver = make_receiver()
    client = make_app(
        WEBHOOK_URL=receiver.url, STATUS_VERIFIED="PASS", VERIFICATION_METHOD="ID"
    ).test_client()
    token = run_flow(client, "verified")
    code = client.get(f"/user/medallion/{token}/status", headers=AUTH).json["userAccessCode"]
    started, outcome = receiver.wait_for(2)
    assert set(outcome) == {"id", "event", "eventDate", "order"}
    assert is_uuid4(outcome["id"]) and outcome["id"] != started["id"]
    assert outcome["event"] == "SELF_VERIFICATION_TRY_STATUS"
    assert EVENT_DATE.fullmatch(outcome["eventDate"])
    assert outcome["order"] == {
        "userAccessCode": code,
        "status": "PASS",
        "verificationMethod": "ID",
    }
    assert receiver.mimetypes == ["application/json", "application/json"]


def test_webhook_retries_after_server_error(make_app, make_receiver):
    receiver = make_receiver(statuses=[500])
    client = make_app(WEBHOOK_URL=receiver.url, STATUS_STARTED="").test_client()
    run_flow(client, "failed")
    first, retry = receiver.wait_for(2)
    assert first == retry
    log = wait_until(lambda: [e for e in deliveries(client) if e["state"] == "delivered"])
    assert log[0]["attempts"] == 2 and log[0]["httpStatus"] == 200
    assert log[0]["eventId"] == first["id"] and log[0]["status"] == "failed"


def test_webhook_gives_up_after_max_attempts(make_app, make_receiver):
    receiver = make_receiver(statuses=[500, 502, 503, 504])
    client = make_app(
        WEBHOOK_URL=receiver.url, STATUS_STARTED="", WEBHOOK_MAX_ATTEMPTS=3
    ).test_client()
    run_flow(client, "verified")
    assert len(receiver.wait_for(3)) == 3
    entry = wait_until(lambda: [e for e in deliveries(client) if e["state"] == "failed"])[0]
    assert (entry["attempts"], entry["httpStatus"]) == (3, 503)


def test_webhook_records_connection_error(make_app):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_app(
        WEBHOOK_URL=f"http://127.0.0.1:{port}/hook", STATUS_STARTED="", WEBHOOK_MAX_ATTEMPTS=2
    ).test_client()
    run_flow(client, "verified")
    entry = wait_until(lambda: [e for e in deliveries(client) if e["state"] == "failed"])[0]
    assert entry["attempts"] == 2 and entry["httpStatus"] is None
    assert entry["error"] == "ConnectionError"


def unused_url():
    """Return a loopback URL where nothing listens, so a delivery gets connection refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def receiver_target(receiver):
    return f"127.0.0.1:{receiver.server.port}"


def test_webhook_deliveries_take_the_urls_in_turn(make_app, make_receiver):
    first, second = make_receiver(), make_receiver()
    client = make_app(WEBHOOK_URL=f"{first.url} {second.url}").test_client()
    run_flow(client, "verified")
    run_flow(client, "failed")
    wait_until(lambda: len(first.bodies) + len(second.bodies) >= 4)
    time.sleep(0.05)
    assert [b["order"]["status"] for b in first.bodies] == ["started", "started"]
    assert [b["order"]["status"] for b in second.bodies] == ["verified", "failed"]
    log = deliveries(client)
    assert [entry["target"] for entry in log] == [
        receiver_target(first),
        receiver_target(second),
    ] * 2
    assert all(entry["attempts"] == 1 for entry in log)


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param(lambda make_receiver: make_receiver(statuses=[503]).url, id="server-error"),
        pytest.param(lambda make_receiver: unused_url(), id="connection-refused"),
        pytest.param(lambda make_receiver: make_receiver(delay=1.0).url, id="timeout"),
    ],
)
def test_webhook_failed_attempt_is_retried_on_the_next_url(make_app, make_receiver, failing):
    healthy = make_receiver()
    client = make_app(
        WEBHOOK_URL=[failing(make_receiver), healthy.url],
        STATUS_STARTED="",
        WEBHOOK_TIMEOUT=0.2,
    ).test_client()
    run_flow(client, "verified")
    (body,) = healthy.wait_for(1)
    assert body["order"]["status"] == "verified"
    entry = wait_until(lambda: [e for e in deliveries(client) if e["state"] == "delivered"])[0]
    assert (entry["attempts"], entry["httpStatus"]) == (2, 200)
    assert entry["target"] == receiver_target(healthy)


def test_webhook_retries_keep_turning_until_max_attempts(make_app, make_receiver):
    broken = make_receiver(statuses=[500, 500, 500])
    client = make_app(
        WEBHOOK_URL=[broken.url, unused_url()], STATUS_STARTED="", WEBHOOK_MAX_ATTEMPTS=3
    ).test_client()
    run_flow(client, "verified")
    entry = wait_until(lambda: [e for e in deliveries(client) if e["state"] == "failed"])[0]
    assert entry["attempts"] == 3 and entry["httpStatus"] == 500
    assert len(broken.bodies) == 2


def test_webhook_duplicates_resend_identical_envelope(client, make_receiver):
    receiver = make_receiver()
    client.post("/company/webhook", json={"webhookURL": receiver.url}, headers=AUTH)
    run_flow(client, "verified", query="&duplicates=1")
    started, started_again, outcome, outcome_again = receiver.wait_for(4)
    assert started == started_again and outcome == outcome_again
    assert (started["order"]["status"], outcome["order"]["status"]) == ("started", "verified")
    assert [e["duplicate"] for e in deliveries(client)] == [False, True, False, True]


def test_webhook_duplicates_setting_applies_to_every_link(make_app, make_receiver):
    receiver = make_receiver()
    client = make_app(WEBHOOK_URL=receiver.url, WEBHOOK_DUPLICATES=True).test_client()
    run_flow(client, "review")
    bodies = receiver.wait_for(4)
    assert len(bodies) == 4 and len({body["id"] for body in bodies}) == 2


@pytest.mark.parametrize(("config", "query"), [({}, "&reorder=1"), ({"WEBHOOK_REORDER": True}, "")])
def test_webhook_reorder_delivers_outcome_before_started(make_app, make_receiver, config, query):
    receiver = make_receiver()
    client = make_app(WEBHOOK_URL=receiver.url, **config).test_client()
    run_flow(client, "verified", query=query)
    outcome, started = receiver.wait_for(2)
    assert (outcome["order"]["status"], started["order"]["status"]) == ("verified", "started")
    assert started["eventDate"] < outcome["eventDate"]


def test_serve_runs_sandbox_over_http_without_logging_client_ip(app, make_receiver, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    receiver = make_receiver()
    server, thread = serve(app)
    base = f"http://127.0.0.1:{server.port}"
    try:
        with requests.Session() as http:
            http.headers.update(AUTH)
            assert http.post(
                f"{base}/company/webhook", json={"webhookURL": receiver.url}, timeout=5
            ).ok
            code = http.post(f"{base}/user/create", json=PERSON, timeout=5).json()["userAccessCode"]
            token = http.post(f"{base}/user/jwt", json={"userAccessCode": code}, timeout=5).json()[
                "token"
            ]
            assert http.get(f"{base}/?token={token}", timeout=5).status_code == 200
            done = http.post(
                f"{base}/medallion/complete",
                data={"token": token, "outcome": "verified"},
                timeout=5,
            )
            assert "You can close this page" in done.text
    finally:
        server.shutdown()
        thread.join(5)
    assert [b["order"]["userAccessCode"] for b in receiver.wait_for(2)] == [code, code]
    access = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert access and all(line.startswith("- - -") for line in access)
    assert not any("127.0.0.1 -" in line or token in line for line in access)


def test_medallion_pages_answer_the_browsers_icon_request_without_a_404(client):
    response = client.get("/favicon.ico")

    assert response.status_code == 204
    assert response.data == b""
