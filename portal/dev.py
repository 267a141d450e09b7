"""Run the portal and the local Authenticate sandbox together, for development.

`make run` calls this. It applies migrations, starts the sandbox on the port of
PORTAL_AUTHENTICATE_API_URL (when that URL is on this machine) with the portal's webhook URL,
then serves the portal on PORTAL_EXTERNAL_URL (127.0.0.1:5000) until stopped.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import run_simple

from portal import create_app
from portal.cli import webhook_url
from portal.migrating import init_migrations
from portal.sandbox.server import AnonymousRequestHandler

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Path segments that are bearer secrets: signed links and the webhook secret.
SECRET_SEGMENTS = [
    (re.compile(r"(/(?:status|resume)/)[^/\s?]+"), r"\1<token>"),
    (re.compile(r"(/webhooks/authenticate/)[^/\s?]+"), r"\1<secret>"),
]


def redact(line: str) -> str:
    """Replace signed tokens and the webhook secret in a request line."""
    for pattern, replacement in SECRET_SEGMENTS:
        line = pattern.sub(replacement, line)
    return line


class PortalRequestHandler(AnonymousRequestHandler):
    """No access line of its own, and error lines without status tokens or the webhook secret."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Write nothing: the portal logs each request itself, by route template."""

    def log_error(self, format: str, *args: Any) -> None:
        """Log a refused request (bad request line, timeout) with its secrets replaced."""
        # The message can quote the raw request line, path and all.
        super().log_error("%s", redact(format % args))


def port_is_free(host: str, port: int) -> bool:
    """Tell whether nothing listens on host:port yet."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        return probe.connect_ex((host, port)) != 0


def start_sandbox(app: Flask) -> subprocess.Popen[bytes] | None:
    """Start the sandbox as a child process, unless the API URL points elsewhere."""
    api = urlsplit(app.config["AUTHENTICATE_API_URL"])
    if api.hostname not in LOOPBACK:
        return None
    port = api.port or 80
    if not port_is_free(api.hostname, port):
        raise SystemExit(
            f"Port {port} is already in use: is an earlier sandbox still running? "
            f"`ss -ltnp 'sport = :{port}'` shows which process has it. Stop that, or give the "
            "sandbox another port (README, Two commands)."
        )
    with app.app_context():
        hook = webhook_url()
    env = dict(
        os.environ, SANDBOX_WEBHOOK_URL=hook, SANDBOX_API_KEY=app.config["AUTHENTICATE_API_KEY"]
    )
    # A short delay before each webhook, as a real provider has, so the status page is seen
    # to change by itself.
    env.setdefault("SANDBOX_WEBHOOK_DELAY", "2")
    command = [sys.executable, "-m", "portal.sandbox", "--host", api.hostname, "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    wait_until_up(app.config["AUTHENTICATE_API_URL"].rstrip("/") + "/_sandbox/users", process)
    threading.Thread(target=watch, args=(process,), daemon=True).start()
    return process


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 15.0) -> None:
    """Wait for the sandbox to answer, so the first form submit doesn't race its start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            requests.get(url, timeout=(0.5, 1))
            return
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"The sandbox did not start at {url}.")


def watch(process: subprocess.Popen[bytes]) -> None:
    """Say so loudly if the sandbox stops while the portal runs."""
    code = process.wait()
    if code not in (0, -signal.SIGTERM):
        print(
            f" * The sandbox stopped (exit {code}); submits will fail until you restart.",
            file=sys.stderr,
            flush=True,
        )


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """Turn SIGTERM into a normal exit, so the sandbox is stopped with the portal."""
    raise SystemExit(0)


def main() -> None:
    """Migrate, start the sandbox, serve the portal; stop the sandbox however we stop."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    # Readable lines in a terminal; an explicit PORTAL_LOG_FORMAT still wins.
    os.environ.setdefault("PORTAL_LOG_FORMAT", "text")
    app = create_app()
    init_migrations(app)
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
            request_handler=PortalRequestHandler,
        )
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(timeout=10)


if __name__ == "__main__":
    main()
