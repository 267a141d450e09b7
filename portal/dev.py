"""Run the portal and the local Authenticate sandbox together, for development.

`make run` calls this. It applies migrations, starts the sandbox on the port of
PORTAL_AUTHENTICATE_API_URL (when that URL is on this machine) with the portal's webhook URL,
then serves the portal on 127.0.0.1:5000 until interrupted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import run_simple

from portal import create_app
from portal.cli import webhook_url
from portal.sandbox.server import AnonymousRequestHandler

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def start_sandbox(app: Flask) -> subprocess.Popen[bytes] | None:
    """Start the sandbox as a child process, unless the API URL points elsewhere."""
    api = urlsplit(app.config["AUTHENTICATE_API_URL"])
    if api.hostname not in LOOPBACK:
        return None
    with app.app_context():
        hook = webhook_url()
    env = dict(
        os.environ, SANDBOX_WEBHOOK_URL=hook, SANDBOX_API_KEY=app.config["AUTHENTICATE_API_KEY"]
    )
    command = [
        sys.executable,
        "-m",
        "portal.sandbox",
        "--host",
        api.hostname,
        "--port",
        str(api.port or 80),
    ]
    process = subprocess.Popen(command, env=env)
    wait_until_up(app.config["AUTHENTICATE_API_URL"].rstrip("/") + "/_sandbox/users")
    return process


def wait_until_up(url: str, seconds: float = 15.0) -> None:
    """Wait for a URL to answer, so the first form submit doesn't race the sandbox start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=(0.5, 1))
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"the sandbox did not start at {url}")


def main() -> None:
    """Migrate, start the sandbox, serve the portal."""
    app = create_app()
    with app.app_context():
        upgrade()
    sandbox = start_sandbox(app)
    external = urlsplit(app.config["EXTERNAL_URL"])
    try:
        print(f" * Portal on {app.config['EXTERNAL_URL']} (Ctrl-C to stop)", flush=True)
        run_simple(
            external.hostname or "127.0.0.1",
            external.port or 5000,
            app,
            threaded=True,
            request_handler=AnonymousRequestHandler,
        )
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(timeout=10)


if __name__ == "__main__":
    main()
