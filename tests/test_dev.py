"""`make run`'s runner: portal and sandbox start together and stop together."""

import os
import signal
import socket
import subprocess
import sys
import time

import requests

from portal.dev import redact
from tests.servers import free_port


def wait_for(url, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return requests.get(url, timeout=1)
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"{url} never answered")


def test_redact_hides_signed_tokens_and_the_webhook_secret():
    line = (
        "GET /status/ImFiYyI.axGY.sig/continue HTTP/1.1 "
        "POST /webhooks/authenticate/s3cr3t-value HTTP/1.1 GET /resume/tok.en HTTP/1.1"
    )
    assert redact(line) == (
        "GET /status/<token>/continue HTTP/1.1 "
        "POST /webhooks/authenticate/<secret> HTTP/1.1 GET /resume/<token> HTTP/1.1"
    )


def test_runner_serves_portal_and_sandbox_and_stops_both_on_sigterm(tmp_path):
    portal_port, sandbox_port = free_port(), free_port()
    env = dict(
        os.environ,
        FLASK_DEBUG="1",
        PORTAL_EXTERNAL_URL=f"http://127.0.0.1:{portal_port}",
        PORTAL_AUTHENTICATE_API_URL=f"http://127.0.0.1:{sandbox_port}",
        PORTAL_AUTHENTICATE_VERIFY_URL=f"http://127.0.0.1:{sandbox_port}/",
        PORTAL_DATABASE_URL=f"sqlite:///{tmp_path / 'dev.sqlite3'}",
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "portal.dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(f"http://127.0.0.1:{portal_port}/").status_code == 200
        assert wait_for(f"http://127.0.0.1:{sandbox_port}/_sandbox/users").json()["count"] == 0
        webhook = requests.post(
            f"http://127.0.0.1:{portal_port}/webhooks/authenticate/dev-only-webhook-secret-"
            "0123456789abcdef0123456789abcdef",
            json={"id": "e1", "event": "OTHER", "order": {}},
            timeout=5,
        )
        assert webhook.status_code == 200
    finally:
        runner.send_signal(signal.SIGTERM)
        output = runner.communicate(timeout=20)[0].decode()
    assert runner.returncode == 0
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", sandbox_port)) != 0, "sandbox left running"
    assert "dev-only-webhook-secret" not in output
    assert "/webhooks/authenticate/<secret>" in output
