"""Prometheus metrics: what is counted, and how a scrape is answered.

Imports nothing from Flask, so the Authenticate client can count its calls without an app.
Under gunicorn every worker writes its counts to files in PROMETHEUS_MULTIPROC_DIR (made and
emptied by portal.gunicorn_conf), and a scrape of any worker, or of the master's metrics
port, adds up all of them. Every label value comes from a small fixed set: route templates,
never paths, so neither a token nor a secret can become a label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# HTTP methods kept as label values; any other method (a client can send anything) is OTHER.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "<unmatched>"

REQUESTS = Counter(
    "portal_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "portal_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOKS = Counter(
    "portal_webhooks",
    "Webhook deliveries by outcome: recorded, duplicate, orphan, ignored (an event type that "
    "moves no state), or refused_<status> (400, 401, 404, 405, 413, 415, 429, 503).",
    ["outcome"],
)
AUTHENTICATE_CALLS = Counter(
    "portal_authenticate_requests",
    "Calls to Authenticate's API by endpoint and outcome (ok, rejected, unavailable, unexpected).",
    ["endpoint", "outcome"],
)
AUTHENTICATE_SECONDS = Histogram(
    "portal_authenticate_request_duration_seconds",
    "Time Authenticate took to answer (or to fail), by endpoint.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
)


def method_label(method: str) -> str:
    """Return the method, or OTHER for one outside METHODS."""
    return method if method in METHODS else "OTHER"


# (route, method, status) -> its counter and histogram children. labels() validates and locks
# on every call; the set of keys is small and fixed, so each is looked up once per process.
_request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    key = (route, method_label(method), status)
    children = _request_children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(route, key[1], str(status)),
            REQUEST_SECONDS.labels(route),
        )
        _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def count_webhook(outcome: str) -> None:
    """Count one webhook delivery by its outcome."""
    WEBHOOKS.labels(outcome).inc()


def observe_authenticate(endpoint: str, outcome: str, seconds: float) -> None:
    """Count one call to Authenticate and its duration."""
    AUTHENTICATE_CALLS.labels(endpoint, outcome).inc()
    AUTHENTICATE_SECONDS.labels(endpoint).observe(seconds)


class RecordsByState(Collector):
    """Count records per portal state when scraped; a database that is down skips the metric."""

    def __init__(self, count: Callable[[], Mapping[str, int]]) -> None:
        self.count = count

    def describe(self) -> list[Metric]:
        # Nothing, so registering does not run a query.
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            counts = self.count()
        except Exception as exc:
            # Any failure (database down, timeout, bad config) must not fail the whole
            # scrape: the other metrics matter most exactly then. The type is enough here.
            logger.warning("records by state not counted: %s", type(exc).__name__)
            return
        family = GaugeMetricFamily(
            "portal_records", "Records by portal state, counted at scrape time.", labels=["state"]
        )
        for state, value in counts.items():
            family.add_metric([state], value)
        yield family


def is_multiprocess() -> bool:
    """Tell whether counts are shared through files (under gunicorn) or kept in memory."""
    return bool(os.environ.get(MULTIPROC_ENV))


def render(count_records: Callable[[], Mapping[str, int]]) -> tuple[bytes, str]:
    """Return the exposition text of every metric, and its content type."""
    if is_multiprocess():
        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared)
    else:
        shared = REGISTRY
    records = CollectorRegistry()
    records.register(RecordsByState(count_records))
    return generate_latest(shared) + generate_latest(records), CONTENT_TYPE_LATEST


def serve_from_master(host: str, port: int, count_records: Callable[[], Mapping[str, int]]) -> None:
    """Answer scrapes on host:port from a thread of the gunicorn master."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(RecordsByState(count_records))
    start_http_server(port, addr=host, registry=registry)
    logger.info("metrics on http://%s:%d/metrics", host, port)
