"""Request size limits, and the caps on onboarding submits (each one is a billable user)."""

import re
from html import unescape

import pytest
import redis

from tests.conftest import VALID_FORM, Onboarding

TOO_LARGE = "That request was larger than we accept. Please go back, shorten what you typed"
LIMITED = "We've had too many new verifications in a short time"
KEPT = "Your details are still here"
TYPED = dict(VALID_FORM, first_name="Siobhán", last_name="O'Brien", email="s.obrien@example.org")


def from_address(app, address):
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=address)
    return client


def submit(client, **fields):
    key = Onboarding(client).fresh_key()
    return client.post("/", data=dict(TYPED, submit_key=key, **fields))


def input_value(html, name):
    match = re.search(rf'<input [^>]*name="{name}"[^>]*value="([^"]*)"', html)
    return match and unescape(match.group(1))


# --- sizes --------------------------------------------------------------------------------


# Werkzeug reads a url-encoded body whole, so PORTAL_MAX_CONTENT_LENGTH bounds it; the
# per-field and field-count limits apply to multipart bodies, which it parses as it reads.
@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/x-www-form-urlencoded", dict(VALID_FORM, notes="x" * 70_000)),
        ("multipart/form-data", dict(VALID_FORM, notes="x" * 70_000)),
        ("multipart/form-data", dict(VALID_FORM, first_name="x" * 9000)),
        ("multipart/form-data", {f"f{i}": "1" for i in range(60)}),
    ],
    ids=[
        "body over max content length",
        "multipart body over it",
        "field over max form memory size",
        "more fields than max form parts",
    ],
)
def test_oversized_form_posts_get_a_413_page_and_create_nobody(build, content_type, data):
    app, fake = build()

    response = app.test_client().post("/", data=data, content_type=content_type)

    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert TOO_LARGE in unescape(response.text)
    assert fake.users == []


def test_a_form_just_inside_the_limits_is_read_and_validated(build):
    app, fake = build()

    response = app.test_client().post(
        "/", data=dict(VALID_FORM, first_name="x" * 6000), content_type="multipart/form-data"
    )

    # Read (not a 413), then refused by the form's own Length validator.
    assert response.status_code == 422
    assert "Field cannot be longer than 100 characters." in unescape(response.text)
    assert fake.users == []


def test_an_admin_sign_in_with_an_over_long_next_still_signs_in(client, admin):
    admin.create()

    response = admin.login(next_path="/admin/records?q=" + "a" * 3000)

    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"


# --- onboarding rate limits ---------------------------------------------------------------


def test_per_address_limit_answers_429_with_the_form_filled_in(build):
    app, fake = build(ONBOARDING_RATE_LIMIT="1 per hour")
    client = from_address(app, "203.0.113.5")

    assert submit(client).status_code == 303
    refused = submit(client, phone="+16502530000")

    assert refused.status_code == 429
    page = unescape(refused.text)
    assert LIMITED in page and KEPT in page
    assert input_value(refused.text, "first_name") == "Siobhán"
    assert input_value(refused.text, "last_name") == "O'Brien"
    assert input_value(refused.text, "email") == "s.obrien@example.org"
    assert input_value(refused.text, "phone") == "+16502530000"
    assert input_value(refused.text, "submit_key")
    assert len(fake.users) == 1


def test_global_limit_stops_a_script_spread_over_many_addresses(build):
    app, fake = build(
        ONBOARDING_RATE_LIMIT="100 per hour", ONBOARDING_GLOBAL_RATE_LIMIT="3 per hour"
    )

    codes = [submit(from_address(app, f"198.51.100.{n}")).status_code for n in range(1, 7)]

    assert codes == [303, 303, 303, 429, 429, 429]
    assert len(fake.users) == 3


def test_global_limit_counts_only_submits_that_went_on(build):
    app, fake = build(ONBOARDING_GLOBAL_RATE_LIMIT="1 per hour")

    refused = [submit(from_address(app, f"198.51.100.{n}"), email="nope") for n in range(5)]
    accepted = submit(from_address(app, "198.51.100.9"))
    limited = submit(from_address(app, "198.51.100.10"))

    assert {r.status_code for r in refused} == {422}
    assert (accepted.status_code, limited.status_code) == (303, 429)
    assert LIMITED in unescape(limited.text)
    assert len(fake.users) == 1


def test_global_limit_is_one_count_across_instances_sharing_redis(build, redis_url):
    settings = dict(ONBOARDING_GLOBAL_RATE_LIMIT="2 per hour", RATELIMIT_STORAGE_URL=redis_url)
    first, first_fake = build(**settings)
    second, second_fake = build(first.config["SQLALCHEMY_DATABASE_URI"], **settings)

    codes = [
        submit(from_address(first, "198.51.100.1")).status_code,
        submit(from_address(second, "198.51.100.2")).status_code,
        submit(from_address(first, "198.51.100.3")).status_code,
        submit(from_address(second, "198.51.100.4")).status_code,
    ]

    assert codes == [303, 303, 429, 429]
    assert len(first_fake.users) + len(second_fake.users) == 2


def test_per_address_counters_in_redis_hold_no_address(build, redis_url):
    """Counters outlive requests (in Redis, shared): their keys must not hold an IP address."""
    app, _ = build(ONBOARDING_RATE_LIMIT="1 per hour", RATELIMIT_STORAGE_URL=redis_url)
    one, other = from_address(app, "203.0.113.77"), from_address(app, "203.0.113.78")

    codes = [submit(one).status_code, submit(one).status_code, submit(other).status_code]

    assert codes == [303, 429, 303]  # still one count per address
    keys = redis.Redis.from_url(redis_url).keys("*")
    assert keys
    assert not [key for key in keys if b"203.0.113" in key]


def test_other_429s_keep_the_plain_error_page(build):
    app, _ = build(EMAIL_RESEND_RATE_LIMIT="0 per hour")

    response = app.test_client().post("/status/not-a-token/email", data={"email": "a@b.example"})

    assert response.status_code == 429
    assert "Too many requests" in response.text
    assert LIMITED not in unescape(response.text)
