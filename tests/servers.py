"""Real servers for tests: free ports, and the portal under gunicorn as the README runs it."""

import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "portal/gunicorn_conf.py"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(env, output, *options, stderr=None, **popen):
    """Start `gunicorn -c portal/gunicorn_conf.py 'portal:create_app()'` from the checkout.

    Its stdout is appended to the file `output`, and its stderr (gunicorn's own log) too
    unless `stderr` names a file of its own. `options` go before the app, `popen` to Popen.
    """
    with (
        open(output, "ab") as out,
        open(stderr, "ab") if stderr else nullcontext(subprocess.STDOUT) as err,
    ):
        return subprocess.Popen(
            [*GUNICORN, *options, "portal:create_app()"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            **popen,
        )


def wait_until_serving(server, url, log, seconds=30):
    """Poll `url` until it answers 200; fail, showing the end of `log`, if `server` exits
    or the deadline passes first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn for {url} exited ({server.returncode}):\n{tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer 200 at {url} within {seconds}s:\n{tail(log)}")


@contextmanager
def serving(env, url, output, stderr=None):
    """Serve the portal under gunicorn until the block ends, then stop it with SIGTERM.

    `url` is where it answers 200 once serving; `output` and `stderr` as for start_gunicorn.
    """
    server = start_gunicorn(env, output, stderr=stderr)
    try:
        wait_until_serving(server, url, stderr or output)
        yield server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def tail(path, lines=40):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
