"""Prometheus metrics: the token-guarded endpoint, the counts, and gunicorn's workers summed."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import responses
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from portal import create_app, store
from portal.client import AuthenticateClient, AuthenticateError
from portal.extensions import db
from tests.conftest import TEST_WEBHOOK_SECRET, base_config, make_app
from tests.servers import free_port, serving
from tests.test_integration import complete_medallion, onboard, uuid_behind

TOKEN = "metrics-token-0123456789abcdefghijklmnop"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK = f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}"
UAC = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/none"


def samples(text):
    """Map (name, sorted labels) to value for every sample in an exposition text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text, name, **labels):
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client):
    response = client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    return response.text


@pytest.fixture
def metrics_app(database_url):
    app = make_app(database_url, METRICS_TOKEN=TOKEN)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def metrics_client(metrics_app):
    return metrics_app.test_client()


# --- who may scrape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "authorization"),
    [
        ("", f"Bearer {TOKEN}"),
        ("", "Bearer "),
        (TOKEN, None),
        (TOKEN, "Bearer wrong-token"),
        (TOKEN, TOKEN),
        (TOKEN, f"Basic {TOKEN}"),
        (TOKEN, f"Bearer {TOKEN}x"),
        (TOKEN, f"Bearer {TOKEN[:-1]}"),
    ],
)
def test_metrics_is_a_404_like_any_unknown_path_without_the_right_token(
    sqlite_url, configured, authorization
):
    client = make_app(sqlite_url, METRICS_TOKEN=configured).test_client()
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = client.get("/metrics", headers=headers)

    unknown = client.get("/no-such-page", headers=headers)
    assert response.status_code == unknown.status_code == 404
    assert response.text == unknown.text
    assert "portal_" not in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_metrics_answers_other_methods_like_an_unknown_path_even_with_csrf_on(sqlite_url, method):
    client = make_app(sqlite_url, METRICS_TOKEN=TOKEN, WTF_CSRF_ENABLED=True).test_client()

    assert client.open("/metrics", method=method).status_code == 404


def test_metrics_refuses_other_methods_to_the_token_holder(metrics_client):
    assert metrics_client.post("/metrics", headers=AUTH).status_code == 405


def test_metrics_with_the_right_token_lists_every_metric_uncached(metrics_client):
    response = metrics_client.get("/metrics", headers=AUTH)

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["Cache-Control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "portal_http_requests",
        "portal_http_request_duration_seconds",
        "portal_webhooks",
        "portal_authenticate_requests",
        "portal_authenticate_request_duration_seconds",
        "portal_records",
    } <= names


# --- what is counted ---------------------------------------------------------------------


def test_a_request_moves_its_route_counter_and_latency_histogram(metrics_client):
    before = scrape(metrics_client)
    metrics_client.get("/status/SeCrEtToKeN")
    after = scrape(metrics_client)

    labels = {"route": "/status/<token>", "method": "GET", "status": "404"}
    moved = value(after, "portal_http_requests_total", **labels) - value(
        before, "portal_http_requests_total", **labels
    )
    assert moved == 1
    count = "portal_http_request_duration_seconds_count"
    assert (
        value(after, count, route="/status/<token>")
        == value(before, count, route="/status/<token>") + 1
    )
    assert "SeCrEtToKeN" not in after


def test_webhook_outcomes_and_refusals_are_counted(metrics_app, metrics_client):
    with metrics_app.app_context():
        store.add_verification(UAC, "key-a")
    status_event = {
        "id": "evt-1",
        "event": "SELF_VERIFICATION_TRY_STATUS",
        "eventDate": "2025-03-14T16:05:09Z",
        "order": {"userAccessCode": UAC, "status": "verified"},
    }
    orphan = dict(status_event, id="evt-2", order={"userAccessCode": "unknown", "status": "x"})
    other = {"id": "evt-3", "event": "SOMETHING_ELSE", "order": {"userAccessCode": UAC}}
    before = scrape(metrics_client)

    for body in (status_event, status_event, orphan, other, {"id": "evt-4"}):
        metrics_client.post(HOOK, json=body)
    metrics_client.post(HOOK, data="{}", content_type="text/plain")
    metrics_client.post("/webhooks/authenticate/wrong-secret", json=status_event)

    after = scrape(metrics_client)
    moved = {
        outcome: value(after, "portal_webhooks_total", outcome=outcome)
        - value(before, "portal_webhooks_total", outcome=outcome)
        for outcome in (
            "recorded",
            "duplicate",
            "orphan",
            "ignored",
            "refused_400",
            "refused_415",
            "refused_404",
        )
    }
    assert moved == dict.fromkeys(moved, 1)
    assert "wrong-secret" not in after and TEST_WEBHOOK_SECRET not in after


def test_records_are_counted_by_state_at_scrape_time(metrics_app, metrics_client):
    before = scrape(metrics_client)
    with metrics_app.app_context():
        store.add_verification(UAC, "key-a")
        store.add_verification("9d1e4c7a-2b3f-4e5d-8a6b-1c2d3e4f5a6b", "key-b")

    after = scrape(metrics_client)

    assert value(before, "portal_records", state="pending") == 0
    assert value(after, "portal_records", state="pending") == 2
    assert value(after, "portal_records", state="verified") == 0


def test_scrape_still_answers_without_records_when_the_database_is_down():
    app = create_app(base_config(UNREACHABLE_DB, METRICS_TOKEN=TOKEN))

    text = scrape(app.test_client())

    names = {family.name for family in text_string_to_metric_families(text)}
    assert "portal_http_requests" in names
    assert "portal_records" not in names


def calls(endpoint, outcome):
    labels = {"endpoint": endpoint, "outcome": outcome}
    return REGISTRY.get_sample_value("portal_authenticate_requests_total", labels) or 0.0


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ({"json": {"status": "verified"}}, "ok"),
        ({"json": {"errorMessage": "no"}, "status": 404}, "rejected"),
        ({"status": 503}, "unavailable"),
        ({"body": requests.ConnectTimeout("connect timed out")}, "unavailable"),
        ({"body": "not json"}, "unexpected"),
    ],
)
def test_authenticate_calls_are_counted_by_endpoint_template_and_outcome(reply, outcome, caplog):
    link_token = "5c1e9a7d-2b48-4f3e-a6d0-91b7c3e8f245"
    endpoint = "/user/medallion/{token}/status"
    client = AuthenticateClient(
        session=requests.Session(),
        base_url="https://api.authenticate.test",
        api_key="key",
        verify_url="https://verify.authenticate.test/",
    )
    before = calls(endpoint, outcome)
    latency = "portal_authenticate_request_duration_seconds_count"
    timed = REGISTRY.get_sample_value(latency, {"endpoint": endpoint}) or 0.0

    with responses.RequestsMock() as mocked:
        mocked.get(f"https://api.authenticate.test/user/medallion/{link_token}/status", **reply)
        try:
            client.get_link_status(link_token)
        except AuthenticateError as exc:
            assert link_token not in str(exc)

    assert calls(endpoint, outcome) == before + 1
    assert REGISTRY.get_sample_value(latency, {"endpoint": endpoint}) == timed + 1
    assert link_token not in generate_latest(REGISTRY).decode()
    assert link_token not in caplog.text


@pytest.fixture
def portal_config():
    return {"METRICS_TOKEN": TOKEN}


def test_an_onboarding_against_the_sandbox_shows_in_one_scrape(live):
    def scraped():
        response = requests.get(f"{live.portal_url}/metrics", headers=AUTH, timeout=5)
        assert response.status_code == 200
        return response.text

    before = scraped()
    with requests.Session() as session:
        link, _ = onboard(live, session)
        complete_medallion(session, link, "verified")
        assert live.wait_for_state(uuid_behind(live, link), "verified") == "verified"
    after = scraped()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("portal_authenticate_requests_total", endpoint="/user/create", outcome="ok") == 1
    assert moved("portal_authenticate_requests_total", endpoint="/user/jwt", outcome="ok") >= 1
    assert moved("portal_webhooks_total", outcome="recorded") >= 1
    assert moved("portal_http_requests_total", route="/", method="POST", status="303") == 1
    assert value(after, "portal_records", state="verified") == 1


# --- under gunicorn ----------------------------------------------------------------------


@pytest.fixture
def gunicorn(tmp_path):
    """The portal under gunicorn with the production config file: 2 workers, 2 threads."""
    database_url = f"sqlite:///{tmp_path / 'gunicorn.sqlite3'}"
    app = make_app(database_url)
    with app.app_context():
        db.engine.dispose()
    port, metrics_port = free_port(), free_port()
    env = dict(
        os.environ,
        PORTAL_SECRET_KEY="gunicorn-test-secret-key-0123456789",
        PORTAL_AUTHENTICATE_API_KEY="gunicorn-test-api-key",
        PORTAL_WEBHOOK_SECRET=TEST_WEBHOOK_SECRET,
        PORTAL_DATABASE_URL=database_url,
        PORTAL_METRICS_TOKEN=TOKEN,
        PORTAL_METRICS_PORT=str(metrics_port),
        # As behind nginx, which names each request; the JSON line test reads the id back.
        PORTAL_TRUSTED_PROXIES="1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="2",
        GUNICORN_THREADS="2",
    )
    url = f"http://127.0.0.1:{port}"
    # stdout gets only the JSON lines; gunicorn's own log goes to a file of its own.
    with serving(env, f"{url}/", tmp_path / "stdout", stderr=tmp_path / "stderr"):
        yield url, f"http://127.0.0.1:{metrics_port}", tmp_path / "metrics"


def test_requests_spread_over_gunicorn_workers_all_show_in_one_scrape(gunicorn, tmp_path):
    url, master_url, folder = gunicorn
    labels = {"route": "/", "method": "GET", "status": "200"}
    first = requests.get(f"{url}/metrics", headers=AUTH, timeout=5).text
    baseline = value(first, "portal_http_requests_total", **labels)
    sent = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Until both workers have served (each keeps its counts in files named by its pid).
        while sent == 0 or (len(list(folder.glob("counter_*.db"))) < 2 and sent < 2000):
            statuses = list(
                pool.map(lambda _: requests.get(f"{url}/", timeout=5).status_code, range(20))
            )
            assert statuses == [200] * 20
            sent += 20
    assert len(list(folder.glob("counter_*.db"))) == 2

    for _ in range(4):
        response = requests.get(f"{url}/metrics", headers=AUTH, timeout=5)
        assert value(response.text, "portal_http_requests_total", **labels) == baseline + sent
    from_master = requests.get(f"{master_url}/metrics", timeout=5).text
    assert value(from_master, "portal_http_requests_total", **labels) == baseline + sent
    assert value(from_master, "portal_http_request_duration_seconds_count", route="/") == (
        baseline + sent
    )
    assert ("portal_records", (("state", "pending"),)) in samples(from_master)


def test_gunicorn_workers_write_one_json_line_per_request_to_stdout(gunicorn, tmp_path):
    url, _, _ = gunicorn
    response = requests.get(f"{url}/status/SeCrEtToKeN", headers={"X-Request-ID": "probe-1"})
    assert response.headers["X-Request-ID"] == "probe-1"
    deadline = time.monotonic() + 5
    while b"probe-1" not in (tmp_path / "stdout").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)

    lines = [json.loads(line) for line in (tmp_path / "stdout").read_text().splitlines()]
    [probe] = [line for line in lines if line.get("request_id") == "probe-1"]
    assert (probe["route"], probe["status"]) == ("/status/<token>", 404)
    assert "SeCrEtToKeN" not in (tmp_path / "stdout").read_text()
