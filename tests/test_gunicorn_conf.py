"""The production command, served for real: gunicorn with portal/gunicorn_conf.py."""

import os
from contextlib import contextmanager

import pytest
import requests

from tests.conftest import TEST_WEBHOOK_SECRET
from tests.servers import free_port, serving
from tests.test_health import migrate
from tests.test_metrics import value

METRICS_TOKEN = "metrics-token-for-the-gunicorn-test-0123456789"
TOKEN = "eyJzZWNyZXQiOiJ0b2tlbiJ9.ZZZZ.not-a-real-signature-but-token-shaped"


@contextmanager
def production_gunicorn(tmp_path, **settings):
    """Serve the portal as the README says, on a migrated SQLite file; yield its base URL.

    Only this environment reaches it: no PORTAL_*, FLASK_* or PROMETHEUS_* from the test run.
    """
    sqlite_url = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    migrate(sqlite_url)
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PORTAL_", "FLASK_", "PROMETHEUS_"))
    }
    env.update(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_THREADS="2",
        PORTAL_SECRET_KEY="gunicorn-test-secret-key-0123456789",
        PORTAL_AUTHENTICATE_API_KEY="gunicorn-test-api-key",
        PORTAL_WEBHOOK_SECRET=TEST_WEBHOOK_SECRET,
        PORTAL_DATABASE_URL=sqlite_url,
        PORTAL_EXTERNAL_URL="https://portal.example.test",
        **settings,
    )
    base = f"http://127.0.0.1:{port}"
    with serving(env, f"{base}/healthz", tmp_path / "gunicorn.log"):
        yield base


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One worker behind one trusted proxy; yield (base URL, path of its combined output)."""
    tmp_path = tmp_path_factory.mktemp("gunicorn")
    settings = dict(
        GUNICORN_WORKERS="1", PORTAL_TRUSTED_PROXIES="1", PORTAL_WEBHOOK_RATE_LIMIT="2 per hour"
    )
    with production_gunicorn(tmp_path, **settings) as base:
        yield base, tmp_path / "gunicorn.log"


def test_gunicorn_serves_probes_and_pages_with_the_security_headers(served):
    base, _ = served

    health = requests.get(f"{base}/healthz", timeout=5)
    ready = requests.get(f"{base}/readyz", timeout=5)
    form = requests.get(f"{base}/", timeout=5)

    assert (health.status_code, ready.status_code, form.status_code) == (200, 200, 200)
    for response in (health, form):
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_gunicorn_writes_no_access_log_with_paths_or_addresses(served):
    base, output = served

    requests.get(f"{base}/status/{TOKEN}", headers={"X-Forwarded-For": "198.51.100.77"}, timeout=5)
    requests.get(f"{base}/resume/{TOKEN}?from=198.51.100.78", timeout=5)
    requests.get(f"{base}/healthz", timeout=5)

    logged = output.read_text()
    assert TOKEN not in logged
    assert "198.51.100.77" not in logged and "198.51.100.78" not in logged
    assert "Booting worker" in logged  # the output is the server's, and it was read


def test_gunicorn_passes_the_forwarded_client_address_through_to_rate_limits(served):
    base, _ = served
    wrong = f"{base}/webhooks/authenticate/wrong-secret"

    def refused_from(address):
        headers = {"X-Forwarded-For": address}
        return requests.post(wrong, json={}, headers=headers, timeout=5).status_code

    first = [refused_from("203.0.113.1") for _ in range(3)]
    other = refused_from("203.0.113.2")

    # PORTAL_TRUSTED_PROXIES=1: the proxy's last hop is the client, each with its own count.
    assert first == [404, 404, 429]
    assert other == 404


def test_metrics_add_up_every_worker_with_only_the_readme_command(tmp_path):
    """No PROMETHEUS_MULTIPROC_DIR given: the config file must still make the workers share."""
    settings = dict(GUNICORN_WORKERS="2", PORTAL_METRICS_TOKEN=METRICS_TOKEN)
    with production_gunicorn(tmp_path, **settings) as base:
        counts_every_worker(base)


def counts_every_worker(base):
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    labels = dict(route="/healthz", method="GET", status="200")

    def healthz_count():
        response = requests.get(f"{base}/metrics", headers=auth, timeout=5)
        assert response.status_code == 200
        return value(response.text, "portal_http_requests_total", **labels)

    before = healthz_count()
    for _ in range(30):
        requests.get(f"{base}/healthz", timeout=5)

    # Each scrape is answered by whichever worker accepts it; every one must see all 30.
    assert [healthz_count() - before for _ in range(6)] == [30] * 6
