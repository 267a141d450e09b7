"""Drive the real AuthenticateClient over a real requests.Session, with `responses` as the wire."""

import http.server
import json
import logging
import threading
from datetime import date

import pytest
import requests
import responses

from portal.client import (
    AuthenticateClient,
    AuthenticateError,
    AuthenticateRejected,
    AuthenticateUnavailable,
    AuthenticateUnexpectedResponse,
    CreatedUser,
    MedallionLink,
    NewUser,
)

BASE_URL = "https://api.authenticate.test/mock"
API_KEY = "test-api-key-5b1d"
VERIFY_URL = "https://verify.authenticate.test/"
CONNECT_TIMEOUT = 2.5
READ_TIMEOUT = 7.0
CREATE_URL = f"{BASE_URL}/user/create"
JWT_URL = f"{BASE_URL}/user/jwt"
UAC = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
TOKEN = "5c1e9a7d-2b48-4f3e-a6d0-91b7c3e8f245"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJ1YWMiOiIzZjZjMmE5ZS04ZDQxIn0.c2lnbmF0dXJl"
REDIRECT = "https://portal.example.org/done/abc"
GENERIC_REJECTION = "The verification service did not accept these details."


@pytest.fixture
def mocked():
    with responses.RequestsMock() as rsps:
        yield rsps


@pytest.fixture
def make_client():
    sessions = []

    def make(**overrides):
        session = requests.Session()
        sessions.append(session)
        settings = {
            "base_url": BASE_URL,
            "api_key": API_KEY,
            "verify_url": VERIFY_URL,
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
        }
        settings.update(overrides)
        return AuthenticateClient(session=session, **settings)

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def client(make_client):
    return make_client()


def make_user(**overrides):
    fields = {
        "first_name": "Dana",
        "last_name": "Okafor",
        "birth_date": date(1988, 11, 7),
        "email": "dana.okafor@example.org",
        "middle_name": "Ife",
        "phone": "+15555550134",
        "country": "USA",
    }
    fields.update(overrides)
    return NewUser(**fields)


def sent_json(call):
    return json.loads(call.request.body)


def call_create_user(client):
    return client.create_user(make_user())


def call_create_link(client):
    return client.create_link(UAC, REDIRECT)


ENDPOINTS = pytest.mark.parametrize(
    ("url", "call"),
    [(CREATE_URL, call_create_user), (JWT_URL, call_create_link)],
    ids=["create_user", "create_link"],
)


# --- create_user ---------------------------------------------------------------------------


def test_create_user_returns_created_user_when_accepted(mocked, client):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC, "extra": "ignored"})

    result = client.create_user(make_user())

    assert isinstance(result, CreatedUser)
    assert result == CreatedUser(user_access_code=UAC)
    assert len(mocked.calls) == 1


def test_create_user_posts_every_field_with_bearer_key_when_called(mocked, client):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC})

    client.create_user(make_user())

    request = mocked.calls[0].request
    assert request.method == "POST"
    assert request.url == CREATE_URL
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert sent_json(mocked.calls[0]) == {
        "firstName": "Dana",
        "middleName": "Ife",
        "lastName": "Okafor",
        "dob": "07-11-1988",
        "email": "dana.okafor@example.org",
        "phone": "+15555550134",
        "country": "USA",
    }


@pytest.mark.parametrize(("missing",), [(None,), ("",)], ids=["none", "empty"])
def test_create_user_sends_null_optionals_when_absent(mocked, client, missing):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC})

    client.create_user(make_user(middle_name=missing, phone=missing, country=missing))

    body = sent_json(mocked.calls[0])
    assert set(body) == {"firstName", "middleName", "lastName", "dob", "email", "phone", "country"}
    assert body["middleName"] is None
    assert body["phone"] is None
    assert body["country"] is None


def test_create_user_sends_null_optionals_when_left_to_defaults(mocked, client):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC})
    user = NewUser(
        first_name="Dana",
        last_name="Okafor",
        birth_date=date(1988, 11, 7),
        email="dana.okafor@example.org",
    )

    client.create_user(user)

    assert sent_json(mocked.calls[0]) == {
        "firstName": "Dana",
        "middleName": None,
        "lastName": "Okafor",
        "dob": "07-11-1988",
        "email": "dana.okafor@example.org",
        "phone": None,
        "country": None,
    }


@pytest.mark.parametrize(
    ("birth_date", "expected"),
    [
        (date(1988, 11, 7), "07-11-1988"),
        (date(2000, 1, 31), "31-01-2000"),
        (date(1990, 5, 22), "22-05-1990"),
        (date(2004, 2, 29), "29-02-2004"),
    ],
)
def test_create_user_formats_dob_day_month_year_when_sent(mocked, client, birth_date, expected):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC})

    client.create_user(make_user(birth_date=birth_date))

    assert sent_json(mocked.calls[0])["dob"] == expected


@pytest.mark.parametrize(("base_url",), [(BASE_URL,), (BASE_URL + "/",)], ids=["bare", "slash"])
def test_create_user_builds_exact_url_when_base_url_has_trailing_slash(
    mocked, make_client, base_url
):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC})

    make_client(base_url=base_url).create_user(make_user())

    assert mocked.calls[0].request.url == CREATE_URL


# --- create_link ---------------------------------------------------------------------------


def test_create_link_returns_medallion_link_when_accepted(mocked, client):
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    link = client.create_link(UAC, REDIRECT)

    assert isinstance(link, MedallionLink)
    assert link == MedallionLink(token=TOKEN, jwt=JWT, url=f"{VERIFY_URL}?token={TOKEN}")


def test_create_link_posts_code_and_redirect_url_when_no_workflow(mocked, client):
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    client.create_link(UAC, REDIRECT)

    request = mocked.calls[0].request
    assert request.method == "POST"
    assert request.url == JWT_URL
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert sent_json(mocked.calls[0]) == {"userAccessCode": UAC, "redirectURL": REDIRECT}


@pytest.mark.parametrize(
    ("workflow_id", "expected_extra"),
    [
        ("wf-42", {"preferredWorkflowID": "wf-42"}),
        (None, {}),
        ("", {}),
    ],
    ids=["configured", "none", "empty"],
)
def test_create_link_sends_workflow_id_only_when_configured(
    mocked, make_client, workflow_id, expected_extra
):
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    make_client(workflow_id=workflow_id).create_link(UAC, REDIRECT)

    assert sent_json(mocked.calls[0]) == {
        "userAccessCode": UAC,
        "redirectURL": REDIRECT,
        **expected_extra,
    }


def test_create_link_omits_redirect_url_when_none(mocked, client):
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    client.create_link(UAC, None)

    assert sent_json(mocked.calls[0]) == {"userAccessCode": UAC}


@pytest.mark.parametrize(
    ("verify_url", "expected"),
    [
        ("https://verify.authenticate.test/", f"https://verify.authenticate.test/?token={TOKEN}"),
        (
            "https://verify.authenticate.test/?lang=en",
            f"https://verify.authenticate.test/?lang=en&token={TOKEN}",
        ),
    ],
    ids=["plain", "with-query"],
)
def test_create_link_joins_token_to_verify_url_when_built(
    mocked, make_client, verify_url, expected
):
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    link = make_client(verify_url=verify_url).create_link(UAC, REDIRECT)

    assert link.url == expected


# --- timeouts ------------------------------------------------------------------------------


def test_client_passes_configured_timeouts_when_calling_each_endpoint(mocked, client):
    mocked.post(CREATE_URL, json={"userAccessCode": UAC})
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    client.create_user(make_user())
    client.create_link(UAC, REDIRECT)

    assert len(mocked.calls) == 2
    for call in mocked.calls:
        assert call.request.req_kwargs["timeout"] == (CONNECT_TIMEOUT, READ_TIMEOUT)


# --- error mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc_type",),
    [(AuthenticateRejected,), (AuthenticateUnavailable,), (AuthenticateUnexpectedResponse,)],
)
def test_client_exceptions_derive_from_base_when_defined(exc_type):
    assert issubclass(exc_type, AuthenticateError)


@ENDPOINTS
def test_client_raises_rejected_with_upstream_message_when_400(mocked, client, url, call):
    mocked.post(url, status=400, json={"errorMessage": "first name required"})

    with pytest.raises(AuthenticateRejected) as excinfo:
        call(client)

    assert excinfo.value.message == "first name required"
    assert excinfo.value.status_code == 400
    assert isinstance(excinfo.value, AuthenticateError)


def test_create_link_raises_rejected_when_user_already_completed(mocked, client):
    mocked.post(JWT_URL, status=400, json={"errorMessage": "User has already completed."})

    with pytest.raises(AuthenticateRejected) as excinfo:
        client.create_link(UAC, REDIRECT)

    assert "already completed" in excinfo.value.message


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body>Bad Request</body></html>", "text/html"),
        ("", "text/plain"),
        ('["first name required"]', "application/json"),
        ('{"error": "first name required"}', "application/json"),
        ('{"errorMessage": 17}', "application/json"),
    ],
    ids=["html", "empty", "json-list", "no-error-message", "non-string-message"],
)
def test_create_user_raises_rejected_with_generic_message_when_400_body_unusable(
    mocked, client, body, content_type
):
    mocked.post(CREATE_URL, status=400, body=body, content_type=content_type)

    with pytest.raises(AuthenticateRejected) as excinfo:
        client.create_user(make_user())

    assert excinfo.value.message == GENERIC_REJECTION
    assert excinfo.value.status_code == 400


@pytest.mark.parametrize(("status",), [(401,), (403,), (404,), (409,), (422,)])
def test_create_user_raises_rejected_when_client_error(mocked, client, status):
    mocked.post(CREATE_URL, status=status, body="")

    with pytest.raises(AuthenticateRejected) as excinfo:
        client.create_user(make_user())

    assert excinfo.value.status_code == status
    assert excinfo.value.message == GENERIC_REJECTION


@ENDPOINTS
@pytest.mark.parametrize(("status",), [(500,), (502,), (503,), (504,)])
def test_client_raises_unavailable_when_server_error(mocked, client, url, call, status):
    mocked.post(url, status=status, json={"errorMessage": "upstream broke"})

    with pytest.raises(AuthenticateUnavailable):
        call(client)


@ENDPOINTS
def test_client_raises_unavailable_when_connection_fails(mocked, client, url, call):
    error = requests.ConnectionError("connection refused")
    mocked.post(url, body=error)

    with pytest.raises(AuthenticateUnavailable) as excinfo:
        call(client)

    assert excinfo.value.__cause__ is error


@ENDPOINTS
@pytest.mark.parametrize(
    ("error",),
    [
        (requests.Timeout("timed out"),),
        (requests.ReadTimeout("read timed out"),),
        (requests.ConnectTimeout("connect timed out"),),
    ],
    ids=["timeout", "read-timeout", "connect-timeout"],
)
def test_client_raises_unavailable_when_request_times_out(mocked, client, url, call, error):
    mocked.post(url, body=error)

    with pytest.raises(AuthenticateUnavailable) as excinfo:
        call(client)

    assert excinfo.value.__cause__ is error
    assert mocked.calls[0].request.req_kwargs["timeout"] == (CONNECT_TIMEOUT, READ_TIMEOUT)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("OK", "text/plain"),
        ("", "application/json"),
        ("{not json", "application/json"),
        ("[]", "application/json"),
        (json.dumps([{"userAccessCode": UAC}]), "application/json"),
        ("null", "application/json"),
        ("{}", "application/json"),
        ('{"userAccessCode": ""}', "application/json"),
        ('{"userAccessCode": "   "}', "application/json"),
        ('{"userAccessCode": null}', "application/json"),
        ('{"userAccessCode": 12345}', "application/json"),
        ('{"userAccessCode": ["x"]}', "application/json"),
    ],
    ids=[
        "text",
        "empty-body",
        "broken-json",
        "empty-list",
        "list",
        "null",
        "missing-code",
        "empty-code",
        "blank-code",
        "null-code",
        "int-code",
        "list-code",
    ],
)
def test_create_user_raises_unexpected_response_when_200_body_unusable(
    mocked, client, body, content_type
):
    mocked.post(CREATE_URL, status=200, body=body, content_type=content_type)

    with pytest.raises(AuthenticateUnexpectedResponse):
        client.create_user(make_user())


@pytest.mark.parametrize(
    ("payload",),
    [
        ({"jwt": JWT},),
        ({"jwt": JWT, "token": ""},),
        ({"jwt": JWT, "token": None},),
        ({"jwt": JWT, "token": 7},),
        ({"token": TOKEN},),
        ({"token": TOKEN, "jwt": ""},),
        ([{"jwt": JWT, "token": TOKEN}],),
    ],
    ids=["no-token", "empty-token", "null-token", "int-token", "no-jwt", "empty-jwt", "list"],
)
def test_create_link_raises_unexpected_response_when_200_body_incomplete(mocked, client, payload):
    mocked.post(JWT_URL, status=200, json=payload)

    with pytest.raises(AuthenticateUnexpectedResponse):
        client.create_link(UAC, REDIRECT)


def test_create_link_raises_unexpected_response_when_200_body_not_json(mocked, client):
    mocked.post(JWT_URL, status=200, body="<html>ok</html>", content_type="text/html")

    with pytest.raises(AuthenticateUnexpectedResponse):
        client.create_link(UAC, REDIRECT)


@pytest.mark.parametrize(("status",), [(204,), (304,)])
def test_create_user_raises_unexpected_response_when_status_has_no_usable_body(
    mocked, client, status
):
    mocked.post(CREATE_URL, status=status, body="")

    with pytest.raises(AuthenticateUnexpectedResponse):
        client.create_user(make_user())


# --- no retry of create_user ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"body": requests.ReadTimeout("read timed out")}, AuthenticateUnavailable),
        ({"body": requests.ConnectTimeout("connect timed out")}, AuthenticateUnavailable),
        ({"body": requests.ConnectionError("connection reset")}, AuthenticateUnavailable),
        ({"status": 503, "body": ""}, AuthenticateUnavailable),
        ({"status": 502, "body": ""}, AuthenticateUnavailable),
        ({"status": 500, "body": ""}, AuthenticateUnavailable),
        ({"status": 400, "json": {"errorMessage": "no"}}, AuthenticateRejected),
        ({"status": 200, "body": "not json"}, AuthenticateUnexpectedResponse),
        ({"status": 200, "json": {"userAccessCode": ""}}, AuthenticateUnexpectedResponse),
    ],
    ids=[
        "read-timeout",
        "connect-timeout",
        "connection-error",
        "503",
        "502",
        "500",
        "400",
        "bad-json",
        "empty-code",
    ],
)
def test_create_user_calls_upstream_once_when_it_fails(mocked, client, kwargs, expected):
    # A registered response answers every matching call, so a retry would show as a 2nd call.
    mocked.post(CREATE_URL, **kwargs)

    with pytest.raises(expected):
        client.create_user(make_user())

    assert len(mocked.calls) == 1


# --- no personal data in logs --------------------------------------------------------------

CANARY_FIRST = "Zqxcanaryfirst"
CANARY_MIDDLE = "Zqxcanarymiddle"
CANARY_LAST = "Zqxcanarylast"
CANARY_EMAIL = "canary.zq@example.org"
CANARY_PHONE = "+15555550987"
CANARY_DOB = date(1971, 3, 19)
CANARIES = [
    CANARY_FIRST,
    CANARY_MIDDLE,
    CANARY_LAST,
    CANARY_EMAIL,
    CANARY_PHONE,
    "19-03-1971",
    "1971-03-19",
    API_KEY,
]


def canary_user():
    return NewUser(
        first_name=CANARY_FIRST,
        middle_name=CANARY_MIDDLE,
        last_name=CANARY_LAST,
        birth_date=CANARY_DOB,
        email=CANARY_EMAIL,
        phone=CANARY_PHONE,
        country="USA",
    )


# Upstream bodies echo the submitted data, so a client that logged bodies would leak it.
ECHO = f"{CANARY_FIRST} {CANARY_LAST} <{CANARY_EMAIL}> {CANARY_PHONE} 19-03-1971"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"status": 400, "json": {"errorMessage": f"invalid: {ECHO}"}}, AuthenticateRejected),
        ({"status": 422, "body": ECHO, "content_type": "text/plain"}, AuthenticateRejected),
        ({"status": 503, "body": ECHO, "content_type": "text/plain"}, AuthenticateUnavailable),
        ({"status": 500, "json": {"errorMessage": ECHO}}, AuthenticateUnavailable),
        ({"body": requests.ReadTimeout("read timed out")}, AuthenticateUnavailable),
        ({"body": requests.ConnectionError("refused")}, AuthenticateUnavailable),
        ({"json": {"userAccessCode": "", "echo": ECHO}}, AuthenticateUnexpectedResponse),
    ],
    ids=[
        "400-json",
        "422-text",
        "503-text",
        "500-json",
        "timeout",
        "connection-error",
        "bad-200",
    ],
)
def test_create_user_logs_no_personal_data_when_it_fails(mocked, client, caplog, kwargs, expected):
    caplog.set_level(logging.DEBUG)
    mocked.post(CREATE_URL, **kwargs)

    with pytest.raises(expected):
        client.create_user(canary_user())

    for canary in CANARIES:
        assert canary not in caplog.text
        for record in caplog.records:
            assert canary not in repr(record.args)


@pytest.mark.parametrize(
    ("kwargs",),
    [
        ({"status": 400, "json": {"errorMessage": "no"}},),
        ({"status": 503, "body": ""},),
        ({"body": requests.ReadTimeout("read timed out")},),
    ],
    ids=["rejected", "unavailable", "timeout"],
)
def test_create_user_logs_failure_when_it_fails(mocked, client, caplog, kwargs):
    # Guards the no-personal-data test above against passing only because nothing was logged.
    caplog.set_level(logging.DEBUG)
    mocked.post(CREATE_URL, **kwargs)

    with pytest.raises(AuthenticateError):
        client.create_user(canary_user())

    messages = [r.getMessage() for r in caplog.records if r.name == "portal.client"]
    assert any("/user/create" in message for message in messages)


def test_new_user_repr_hides_personal_data_when_formatted():
    user = canary_user()

    for text in (repr(user), str(user), f"{user!r}", repr([user]), repr({"user": user})):
        for canary in CANARIES:
            assert canary not in text


# --- from_config ---------------------------------------------------------------------------


def test_from_config_builds_client_that_uses_settings_when_called(mocked):
    config = {
        "AUTHENTICATE_API_URL": "https://api.config.test/v3/",
        "AUTHENTICATE_API_KEY": "config-key-77",
        "AUTHENTICATE_VERIFY_URL": "https://verify.config.test/start?lang=fr",
        "AUTHENTICATE_CONNECT_TIMEOUT": "1.5",
        "AUTHENTICATE_READ_TIMEOUT": 4,
        "AUTHENTICATE_WORKFLOW_ID": "wf-config",
    }
    mocked.post("https://api.config.test/v3/user/create", json={"userAccessCode": UAC})
    mocked.post("https://api.config.test/v3/user/jwt", json={"jwt": JWT, "token": TOKEN})

    client = AuthenticateClient.from_config(config)
    try:
        created = client.create_user(make_user())
        link = client.create_link(created.user_access_code, REDIRECT)
    finally:
        client.session.close()

    assert isinstance(client.session, requests.Session)
    assert created == CreatedUser(user_access_code=UAC)
    assert link.url == f"https://verify.config.test/start?lang=fr&token={TOKEN}"
    assert [call.request.url for call in mocked.calls] == [
        "https://api.config.test/v3/user/create",
        "https://api.config.test/v3/user/jwt",
    ]
    for call in mocked.calls:
        assert call.request.headers["Authorization"] == "Bearer config-key-77"
        assert call.request.req_kwargs["timeout"] == (1.5, 4.0)
    assert sent_json(mocked.calls[1]) == {
        "userAccessCode": UAC,
        "redirectURL": REDIRECT,
        "preferredWorkflowID": "wf-config",
    }


@pytest.mark.parametrize(
    ("extra",),
    [({},), ({"AUTHENTICATE_WORKFLOW_ID": None},), ({"AUTHENTICATE_WORKFLOW_ID": ""},)],
    ids=["missing", "none", "empty"],
)
def test_from_config_sends_no_workflow_id_when_setting_unset(mocked, extra):
    config = {
        "AUTHENTICATE_API_URL": BASE_URL,
        "AUTHENTICATE_API_KEY": API_KEY,
        "AUTHENTICATE_VERIFY_URL": VERIFY_URL,
        "AUTHENTICATE_CONNECT_TIMEOUT": 3.05,
        "AUTHENTICATE_READ_TIMEOUT": 10.0,
        **extra,
    }
    mocked.post(JWT_URL, json={"jwt": JWT, "token": TOKEN})

    client = AuthenticateClient.from_config(config)
    try:
        client.create_link(UAC, REDIRECT)
    finally:
        client.session.close()

    assert client.workflow_id is None
    assert sent_json(mocked.calls[0]) == {"userAccessCode": UAC, "redirectURL": REDIRECT}
    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.05, 10.0)


# --- the session: environment read once ----------------------------------------------------


@pytest.fixture
def forward_proxy():
    """A plain HTTP proxy stand-in on loopback: records each request line, answers for all."""
    seen = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"userAccessCode": UAC}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def client_from_config(base_url):
    return AuthenticateClient.from_config(
        {
            "AUTHENTICATE_API_URL": base_url,
            "AUTHENTICATE_API_KEY": API_KEY,
            "AUTHENTICATE_VERIFY_URL": VERIFY_URL,
            "AUTHENTICATE_CONNECT_TIMEOUT": 1,
            "AUTHENTICATE_READ_TIMEOUT": 2,
        }
    )


def test_client_goes_through_the_proxy_set_for_the_process(forward_proxy, monkeypatch):
    proxy_url, seen = forward_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    created = call_create_user(client_from_config("http://authenticate.invalid/mock"))

    assert created.user_access_code == UAC
    assert seen == ["http://authenticate.invalid/mock/user/create"]


def test_client_skips_the_proxy_for_hosts_in_no_proxy(forward_proxy, monkeypatch):
    proxy_url, seen = forward_proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "authenticate.invalid")

    with pytest.raises(AuthenticateUnavailable):
        call_create_user(client_from_config("http://authenticate.invalid/mock"))

    assert seen == []
