"""JSON log lines: request ids, one access line per request, and only known fields."""

import io
import logging

import pytest

from portal.logs import make_handler
from tests.conftest import TEST_WEBHOOK_SECRET, make_app

CANARY = "Zqwlogcanary"


@pytest.fixture
def log_app(sqlite_url):
    """An app with a route that fails, to see how an unexpected exception is logged."""
    app = make_app(sqlite_url, PROPAGATE_EXCEPTIONS=False, TRUSTED_PROXIES=1)

    @app.get("/boom/<token>")
    def boom(token):
        raise ValueError(f"could not parse {CANARY} in {token}")

    return app


def test_access_line_is_json_with_request_id_route_status_and_duration(client, json_log):
    response = client.get("/")

    [line] = json_log.access()
    assert line["route"] == "/"
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["level"] == "INFO"
    assert line["time"].endswith("+00:00")
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert len(line["request_id"]) == 32


def test_access_line_names_the_route_template_never_the_path_or_query(client, json_log):
    client.get("/status/SeCrEtToKeN.abc.def?email=someone@example.org")
    client.post(f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}", json={"id": "x"})

    assert [line["route"] for line in json_log.access()] == [
        "/status/<token>",
        "/webhooks/authenticate/<secret>",
    ]
    for leak in ("SeCrEtToKeN", "someone", "example.org", TEST_WEBHOOK_SECRET):
        assert leak not in json_log.text


def test_access_line_holds_no_client_address_user_agent_or_headers(client, json_log):
    client.get(
        "/",
        headers={"User-Agent": f"{CANARY}Agent/1.0", "Referer": f"https://{CANARY}.test/"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )

    [line] = json_log.access()
    assert set(line) == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "route",
        "status",
        "duration_ms",
    }
    assert CANARY not in json_log.text
    assert "203.0.113.77" not in json_log.text


def test_unknown_path_and_method_are_logged_with_fixed_labels(client, json_log):
    client.open(f"/{CANARY}", method=f"{CANARY.upper()}")

    [line] = json_log.access()
    assert (line["method"], line["route"], line["status"]) == ("OTHER", "<unmatched>", 404)
    assert CANARY.lower() not in json_log.text.lower()


def test_request_id_from_a_trusted_proxy_is_kept_and_echoed(sqlite_url, json_log):
    client = make_app(sqlite_url, TRUSTED_PROXIES=1).test_client()
    response = client.get("/", headers={"X-Request-ID": "edge-7f3a.01_B"})

    assert response.headers["X-Request-ID"] == "edge-7f3a.01_B"
    assert json_log.access()[0]["request_id"] == "edge-7f3a.01_B"


def test_request_id_sent_straight_by_a_client_is_replaced(client, json_log):
    """Without a proxy of ours in front, the header is whatever a client typed: not logged."""
    response = client.get("/", headers={"X-Request-ID": "dana.example"})

    assert response.headers["X-Request-ID"] != "dana.example"
    assert json_log.access()[0]["request_id"] == response.headers["X-Request-ID"]
    assert "dana.example" not in json_log.text


@pytest.mark.parametrize(
    "hostile",
    [
        "a" * 65,
        "two words",
        '{"level": "CRITICAL"}',
        "id;drop",
        "caf\u00e9",
        "",
    ],
)
def test_hostile_incoming_request_id_is_replaced(sqlite_url, json_log, hostile):
    client = make_app(sqlite_url, TRUSTED_PROXIES=1).test_client()
    response = client.get("/", headers={"X-Request-ID": hostile})

    echoed = response.headers["X-Request-ID"]
    assert echoed != hostile
    assert len(echoed) == 32 and all(c in "0123456789abcdef" for c in echoed)
    assert json_log.access()[0]["request_id"] == echoed


def test_every_record_during_a_request_carries_its_request_id(
    client, fake_client, onboarding, json_log
):
    onboarding.submit()

    created = [line for line in json_log.lines() if line["message"].startswith("created user")]
    [submit] = json_log.access("/")[-1:]
    assert submit["method"] == "POST"
    assert [line["request_id"] for line in created] == [submit["request_id"]]


def test_unexpected_exception_is_logged_by_type_and_frames_without_its_message(log_app, json_log):
    response = log_app.test_client().get(f"/boom/{CANARY}Token")

    assert response.status_code == 500
    [error] = [line for line in json_log.lines() if line["level"] == "ERROR"]
    assert error["message"] == "unhandled exception in GET /boom/<token>"
    [exception] = error["exception"]
    assert exception["type"] == "ValueError"
    assert any(frame.endswith(" in boom") for frame in exception["frames"])
    assert error["request_id"] == json_log.access()[0]["request_id"]
    assert CANARY not in json_log.text


def test_exception_chain_is_logged_outermost_first(json_log):
    logger = logging.getLogger("portal.test")
    try:
        try:
            int(CANARY)
        except ValueError as inner:
            raise RuntimeError(CANARY) from inner
    except RuntimeError:
        logger.exception("parsing failed")

    [line] = json_log.lines()
    assert [item["type"] for item in line["exception"]] == ["RuntimeError", "ValueError"]
    assert "request_id" not in line
    assert CANARY not in json_log.text


def test_extras_outside_the_allow_list_are_not_written(json_log):
    logging.getLogger("portal.test").warning(
        "something", extra={"email": f"{CANARY}@example.org", "status": 503}
    )

    [line] = json_log.lines()
    assert line["status"] == 503
    assert "email" not in line
    assert CANARY not in json_log.text


def test_text_format_is_one_readable_line_with_the_request_id_and_no_exception_message(
    log_app,
):
    stream = io.StringIO()
    handler = make_handler("text", stream)
    logger = logging.getLogger("portal")
    logger.addHandler(handler)
    try:
        log_app.test_client().get(f"/boom/{CANARY}", headers={"X-Request-ID": "req-1"})
    finally:
        logger.removeHandler(handler)

    text = stream.getvalue()
    assert "ERROR portal [req-1] unhandled exception in GET /boom/<token>\n  ValueError\n" in text
    assert "INFO portal.access [req-1] GET /boom/<token> 500 " in text
    assert CANARY not in text


def test_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="PORTAL_LOG_FORMAT"):
        make_handler("xml")


def test_rate_limit_breaches_are_not_logged_with_the_client_address(sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_app(sqlite_url, WEBHOOK_RATE_LIMIT="1 per minute").test_client()
    address = {"REMOTE_ADDR": "203.0.113.77"}

    statuses = [
        client.post("/webhooks/authenticate/wrong", environ_base=address).status_code
        for _ in range(3)
    ]

    assert statuses[-1] == 429
    assert "203.0.113.77" not in caplog.text
