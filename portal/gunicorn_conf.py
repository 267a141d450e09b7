"""Gunicorn settings for production. Load this file by its path, from the checkout:

    gunicorn -c portal/gunicorn_conf.py 'portal:create_app()'

(Not as `python:portal.gunicorn_conf`: that imports the portal package, and with it
prometheus_client, before this file can name the metrics folder; each worker would then
count alone and the metrics would show almost nothing. The file refuses to load that way.)

Each value can be changed through the GUNICORN_* environment variable named next to it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.workers.base import Worker


def _int_env(name: str, default: int) -> int:
    """Return the environment variable `name` as a positive integer, or `default` when unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {raw!r}")
    return value


# Address to listen on; behind a reverse proxy on the same host, loopback is enough.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")

# Threads, not sync workers: an onboarding submit waits on Authenticate (up to the connect
# plus read timeouts) and a sync worker would serve nobody else meanwhile. The waiting is
# I/O, so threads share one process's memory and the GIL is released while they wait.
worker_class = "gthread"
workers = _int_env("GUNICORN_WORKERS", _int_env("WEB_CONCURRENCY", 2))
threads = _int_env("GUNICORN_THREADS", 8)

# A worker silent for this long is killed and replaced. Kept above the Authenticate
# client's connect + read timeouts so a slow upstream answer never costs a worker.
timeout = _int_env("GUNICORN_TIMEOUT", 30)
# On SIGTERM (deploys, scale-down) workers finish requests in flight for this long.
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Seconds an idle keep-alive connection from the proxy stays open.
keepalive = _int_env("GUNICORN_KEEPALIVE", 5)

# No access log: its lines hold the raw path (signed status and resume tokens) and the
# client address, both of which the portal keeps out of its logs. The app logs each
# request itself, without them. Errors still go to stderr.
accesslog = None
# gunicorn 27's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl):
# two instances on one host would take it from each other, and the service user's home may
# not be writable. Nothing here uses it. (Older gunicorn ignores the unknown name.)
control_socket_disable = True
errorlog = "-"

# Forwarded headers are interpreted in one place only: the app's ProxyFix, which trusts
# exactly PORTAL_TRUSTED_PROXIES hops. Gunicorn would otherwise set https from
# X-Forwarded-Proto for any peer in forwarded_allow_ips (loopback by default) regardless
# of that count, so a client talking to an instance directly could choose the scheme.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}

# Prometheus: every worker writes its counts to files in PROMETHEUS_MULTIPROC_DIR, and a scrape
# adds them up (portal.metrics). prometheus_client reads the variable when first imported, so
# it is set here, in the master, before any worker exists. Unless the operator names a folder,
# each master makes its own, so two instances on one machine never mix counts; a master
# started by USR2 (new binary) sees the folder its parent made and makes its own as well.
_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_MADE_BY = "PORTAL_METRICS_DIR_MADE_BY"
if "gunicorn.arbiter" in sys.modules and "prometheus_client" in sys.modules:
    if not os.environ.get(_MULTIPROC_DIR):
        raise RuntimeError(
            "load the gunicorn config by path: gunicorn -c portal/gunicorn_conf.py "
            "'portal:create_app()' (as python:portal.gunicorn_conf it imports prometheus_client "
            "before PROMETHEUS_MULTIPROC_DIR is set, and each worker's metrics would stay apart)"
        )
if not os.environ.get(_MULTIPROC_DIR) or os.environ.get(_MADE_BY, str(os.getpid())) != str(
    os.getpid()
):
    os.environ[_MULTIPROC_DIR] = tempfile.mkdtemp(prefix="portal-metrics-")
    os.environ[_MADE_BY] = str(os.getpid())


def on_starting(server: Arbiter) -> None:
    """Create the metrics folder, or empty it of counts left by an earlier run."""
    folder = Path(os.environ[_MULTIPROC_DIR])
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in folder.glob("*.db"):
        leftover.unlink()


def when_ready(server: Arbiter) -> None:
    """Serve the metrics from the master too, when PORTAL_METRICS_PORT is set."""
    # A thread of the master, started before the workers are forked; they use none of its
    # state, and it builds its own app (for the record counts) only on the first scrape.
    port = int(os.environ.get("PORTAL_METRICS_PORT") or 0)
    if port:
        from portal import metrics, observability

        host = os.environ.get("PORTAL_METRICS_HOST") or "127.0.0.1"
        metrics.serve_from_master(host, port, observability.master_record_counter())


def child_exit(server: Arbiter, worker: Worker) -> None:
    """Let the metrics forget a dead worker's live values; its counts stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Arbiter) -> None:
    """Remove the metrics folder this master made."""
    if os.environ.get(_MADE_BY) == str(os.getpid()):
        shutil.rmtree(os.environ[_MULTIPROC_DIR], ignore_errors=True)
