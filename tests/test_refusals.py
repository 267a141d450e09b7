"""Refused-webhook counters in the rate-limit storage, for the admin health panel."""

import time

import pytest

from portal import refusals
from portal.extensions import limiter
from tests.conftest import make_app

# The middle of an hour, so "23 hours before" and "24 hours before" fall on either side.
NOW = 1_800_000_000 - 1_800_000_000 % 3600 + 1800
HOUR = 3600


@pytest.fixture
def app_context(app):
    with app.app_context():
        yield


def test_refusals_are_summed_by_code_over_the_current_hour_and_the_23_before(app_context):
    refusals.count_refusal(404, now=NOW)
    refusals.count_refusal(404, now=NOW - 23 * HOUR)
    refusals.count_refusal(503, now=NOW - 2 * HOUR)
    refusals.count_refusal(400, now=NOW - 24 * HOUR)  # outside the window

    counts = refusals.refusal_counts(now=NOW)

    assert counts.by_code == {"404": 2, "503": 1}
    assert (counts.total("4xx"), counts.total("5xx")) == (2, 1)
    assert refusals.refusal_counts(now=NOW + 24 * HOUR).by_code == {}


def test_codes_the_endpoint_never_answers_are_counted_by_class(app_context):
    refusals.count_refusal(418, now=NOW)
    refusals.count_refusal(502, now=NOW)

    counts = refusals.refusal_counts(now=NOW)

    assert counts.by_code == {"4xx": 1, "5xx": 1}


def test_each_counter_expires_an_hour_after_its_window(app_context):
    refusals.count_refusal(413, now=NOW)

    key = f"portal/webhook-refused/413/{NOW // HOUR}"
    assert limiter.storage.get(key) == 1
    assert 24 * HOUR < limiter.storage.get_expiry(key) - time.time() <= 25 * HOUR


def test_counting_fails_open_when_the_storage_is_down(sqlite_url, caplog):
    app = make_app(sqlite_url, RATELIMIT_STORAGE_URL="redis://127.0.0.1:1")
    with app.app_context():
        refusals.count_refusal(404)

        assert refusals.refusal_counts() is None
    assert "webhook refusal 404 not counted" in caplog.text


def test_health_page_says_when_the_counts_cannot_be_read(admin_client, app):
    # Signed in first: the sign-in form is rate-limited, so it needs a working storage.
    app.config["RATELIMIT_STORAGE_URI"] = "redis://127.0.0.1:1"
    limiter.init_app(app)

    html = admin_client.get("/admin/health").text

    assert "unavailable: the rate-limit storage cannot be read" in html
