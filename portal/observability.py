"""Request ids, one access log line per request, request metrics, and the log handler."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from flask import Flask, current_app, g, request
from flask.logging import default_handler
from werkzeug.wrappers import Response

from portal import metrics
from portal.config import trusted_proxies
from portal.logs import accept_request_id, make_handler
from portal.store import health as health_store

REQUEST_ID_HEADER = "X-Request-ID"
# A scrape waits at most this long for the records-by-state query (PostgreSQL cancels it).
RECORDS_TIMEOUT_MS = 2000
access_log = logging.getLogger("portal.access")


class PortalFlask(Flask):
    """Flask, with an exception log line that names the route template instead of the path."""

    def log_exception(
        self, exc_info: tuple[type, BaseException, TracebackType] | tuple[None, None, None]
    ) -> None:
        # Flask's own line quotes request.path, which holds signed tokens (status, resume)
        # and the webhook secret.
        self.logger.error(
            "unhandled exception in %s %s",
            metrics.method_label(request.method),
            route_template(),
            exc_info=exc_info,
        )


def route_template() -> str:
    """Return the matched rule ("/status/<token>"), never the path it matched."""
    rule = request.url_rule
    return rule.rule if rule is not None else metrics.UNMATCHED_ROUTE


def configure_logging(app: Flask) -> None:
    """Send the portal's log records to stdout in PORTAL_LOG_FORMAT, once per process."""
    logger = logging.getLogger("portal")
    logger.setLevel(app.config["LOG_LEVEL"])
    # Flask-Limiter logs each breach at INFO with its key: a client address, or a key derived
    # from a signed link. Its warnings (storage unreachable) hold neither.
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)
    if app.testing or any(getattr(h, "_portal", False) for h in logger.handlers):
        return
    handler = make_handler(app.config["LOG_FORMAT"])
    handler._portal = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    # Flask adds its own stderr handler to app.logger ("portal") when it sees none; one
    # format, one line per record.
    logger.removeHandler(default_handler)
    # One line per record, even when something (Alembic's logging config) adds a root handler.
    logger.propagate = False


def init_app(app: Flask) -> None:
    """Give every request an id, an access log line and its metrics."""
    # First in, last out: the timer starts before any other hook (a rate-limit refusal still
    # gets an id) and stops after every other after_request hook.
    # Only a proxy we run may name the request (nginx: proxy_set_header X-Request-ID
    # $request_id); from anyone else the header is free text a client chose, so a new id.
    try:
        app.extensions["portal.trust_request_id"] = trusted_proxies(app.config) > 0
    except ValueError:
        app.extensions["portal.trust_request_id"] = False  # create_app or check-config says why
    app.before_request_funcs.setdefault(None, []).insert(0, start_request)
    app.after_request_funcs.setdefault(None, []).insert(0, finish_request)


def start_request() -> None:
    """Start the request's timer and settle its id (a trusted proxy's, if well-formed)."""
    g.request_started = time.perf_counter()
    trusted = current_app.extensions.get("portal.trust_request_id", False)
    g.request_id = accept_request_id(request.headers.get(REQUEST_ID_HEADER) if trusted else None)


def finish_request(response: Response) -> Response:
    """Echo the request id, count the request and write its access line."""
    started = g.get("request_started")
    if started is None:
        # The request failed before any before_request hook ran; it still gets an id and a line.
        start_request()
        started = g.request_started
    seconds = time.perf_counter() - started
    route = route_template()
    method = metrics.method_label(request.method)
    status = response.status_code
    response.headers[REQUEST_ID_HEADER] = g.request_id
    metrics.observe_request(route, method, status, seconds)
    duration_ms = round(seconds * 1000, 1)
    # Route template, method, status and time only: no query string, client address,
    # user agent or other header.
    access_log.info(
        "%s %s %d %.1fms",
        method,
        route,
        status,
        duration_ms,
        extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms},
    )
    return response


def count_records() -> dict[str, int]:
    """Count records per state for a scrape, within the app context of the request."""
    return health_store.count_records_by_state(RECORDS_TIMEOUT_MS)


def master_record_counter() -> Callable[[], dict[str, int]]:
    """Return a records-by-state counter for the gunicorn master's metrics port.

    The master serves no requests and has no app; it builds one on the first scrape (after
    the workers are forked, so they share nothing with it) and reuses it.
    """
    apps: list[Flask] = []
    lock = threading.Lock()

    def count() -> dict[str, int]:
        with lock:
            if not apps:
                from portal import create_app

                apps.append(create_app())
            with apps[0].app_context():
                return count_records()

    return count
