"""The onboarding views: the form, its one-time submit key, upstream failures and the next step."""

import re
import time
from datetime import date
from html import unescape

import pytest

from portal import store
from portal.client import (
    AuthenticateRejected,
    AuthenticateUnavailable,
    AuthenticateUnexpectedResponse,
)
from portal.extensions import db
from portal.helpers import load_status_token
from tests.conftest import VALID_FORM, FakeAuthenticate, make_app, status_uuid, submit_key_from

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,64}")
CONTINUE_PATTERN = re.compile(r"/status/([A-Za-z0-9_.-]+)/continue")
EXTERNAL_URL = "https://portal.example.test"
UNAVAILABLE_TEXT = "We couldn't reach the verification service just now."
UNEXPECTED_TEXT = "The verification service gave an answer we didn't understand."
IN_FLIGHT_TEXT = "We're still processing your first submission of this form."
KEPT_TEXT = "Your details are still here"
FILLED_FORM = dict(
    VALID_FORM,
    first_name="Siobhán",
    middle_name="Ngozi",
    last_name="O'Brien",
    phone="+16502530000",
    country="GBR",
)
TEXT_FIELDS = ("first_name", "middle_name", "last_name", "birth_date", "email", "phone")


def visible(response):
    """Return the page text with entities decoded, as a person reads it."""
    return unescape(response.text)


def input_value(html, name):
    """Return the value a browser shows in the input called `name`."""
    match = re.search(rf'<input [^>]*name="{name}"[^>]*value="([^"]*)"', html)
    assert match, f"no input {name!r} with a value"
    return unescape(match.group(1))


def selected_option(html, name):
    select = re.search(rf'<select [^>]*name="{name}".*?</select>', html, re.S).group(0)
    match = re.search(r'<option selected value="([^"]*)"', select)
    return match and match.group(1)


def assert_values_kept(html, data):
    """Every typed value is back in the re-rendered form."""
    for name in TEXT_FIELDS:
        assert input_value(html, name) == data[name], name
    assert selected_option(html, "country") == data["country"]
    assert re.search(r'<input [^>]*checked[^>]*name="consent"', html)


def token_of(location):
    match = CONTINUE_PATTERN.fullmatch(location)
    assert match, location
    return match.group(1)


def user_behind(app, location):
    """Return the Authenticate UUID a next-step Location points at."""
    with app.app_context():
        return load_status_token(token_of(location))


# The form


def test_index_keeps_one_submit_key_per_browser_and_a_new_one_per_browser(app, client):
    first = client.get("/")
    second = client.get("/")
    other_browser = app.test_client().get("/")

    assert first.status_code == 200
    assert '<form method="post" action="/"' in first.text
    assert 'name="submit_key" type="hidden"' in first.text
    first_key = submit_key_from(first.text)
    assert KEY_PATTERN.fullmatch(first_key)
    assert submit_key_from(second.text) == first_key
    assert submit_key_from(other_browser.text) != first_key


def page_shape(url):
    """Return a status URL with its token blanked out: which page, not which signature."""
    return re.sub(r"/status/[^/?]+", "/status/TOKEN", url)


def test_back_then_reloaded_form_resubmits_to_the_same_user(app, client, fake_client):
    """The browser re-fetches the form on Back (no page cache) and the person sends it again."""
    key = submit_key_from(client.get("/").text)
    first = client.post("/", data=dict(VALID_FORM, submit_key=key))
    reloaded = client.get("/")
    again = client.post("/", data=dict(VALID_FORM, submit_key=submit_key_from(reloaded.text)))

    assert len(fake_client.users) == 1
    assert page_shape(again.headers["Location"]) == page_shape(first.headers["Location"])
    assert status_uuid(app, again.headers["Location"]) == status_uuid(
        app, first.headers["Location"]
    )
    assert "already sent your details from this browser" in reloaded.text


def test_start_a_new_verification_gives_a_new_key_and_a_new_user(client, fake_client):
    key = submit_key_from(client.get("/").text)
    client.post("/", data=dict(VALID_FORM, submit_key=key))
    assert client.post("/new").status_code == 303
    new_key = submit_key_from(client.get("/").text)
    client.post("/", data=dict(VALID_FORM, first_name="Danielle", submit_key=new_key))

    assert new_key != key
    assert [user.first_name for user in fake_client.users] == ["Dana", "Danielle"]


def test_index_offers_a_new_key_once_the_verification_is_decided(app, client, fake_client):
    key = submit_key_from(client.get("/").text)
    client.post("/", data=dict(VALID_FORM, submit_key=key))
    with app.app_context():
        record = store.get_verification(store.submission_user(key))
        record.state = "verified"
        db.session.commit()
    page = client.get("/")

    assert submit_key_from(page.text) != key
    assert "already sent your details" not in page.text


def test_start_a_new_verification_needs_the_csrf_token(sqlite_url):
    app = make_app(sqlite_url, WTF_CSRF_ENABLED=True)
    assert app.test_client().post("/new").status_code == 400


def test_index_shows_consent_statement_and_unticked_box_when_requested(client):
    response = client.get("/")

    assert response.status_code == 200
    assert 'id="consent-statement"' in response.text
    assert "sends these details to\n    Authenticate (authenticate.com) to verify my identity" in (
        response.text
    )
    assert re.search(r'<input [^>]*name="consent"', response.text)
    assert not re.search(r'<input [^>]*checked[^>]*name="consent"', response.text)


# A valid submit


def test_submit_creates_one_user_and_redirects_to_next_step_when_valid(
    app, onboarding, fake_client
):
    response = onboarding.submit()

    assert response.status_code == 303
    assert CONTINUE_PATTERN.fullmatch(response.headers["Location"])
    assert len(fake_client.users) == 1
    user = fake_client.users[0]
    assert user.first_name == "Dana"
    assert user.middle_name is None
    assert user.last_name == "Okafor"
    assert user.birth_date == date(1988, 11, 7)
    assert type(user.birth_date) is date
    assert user.email == "dana.okafor@example.org"
    assert user.phone is None
    assert user.country == "USA"
    with app.app_context():
        assert store.get_verification(user_behind(app, response.headers["Location"])) is not None


def test_submit_sends_optional_fields_when_filled(onboarding, fake_client):
    response = onboarding.submit(middle_name="Ngozi", phone="0803 123 4567", country="NGA")

    assert response.status_code == 303
    user = fake_client.users[0]
    assert user.middle_name == "Ngozi"
    assert user.phone == "+2348031234567"
    assert user.country == "NGA"


def test_continue_shows_medallion_link_without_caching_when_user_was_created(
    client, onboarding, fake_client
):
    location = onboarding.submit().headers["Location"]

    response = client.get(location)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    link = re.search(r'id="medallion-link" href="([^"]+)"', response.text)
    assert link
    url = unescape(link.group(1))
    assert url.startswith("https://verify.invalid/?token=")
    refresh = re.search(r'<meta http-equiv="refresh" content="(\d+);url=([^"]+)">', response.text)
    assert refresh
    assert unescape(refresh.group(2)) == url
    assert "Continue to verification" in response.text
    assert len(fake_client.links) == 1


def test_continue_gives_redirect_url_from_external_url_when_host_is_forged(
    app, client, onboarding, fake_client
):
    forged = {"Host": "evil.example", "X-Forwarded-Host": "attacker.example"}
    key = onboarding.fresh_key()
    submitted = client.post("/", data=dict(VALID_FORM, submit_key=key), headers=forged)

    response = client.get(submitted.headers["Location"], headers=forged)

    assert response.status_code == 200
    (user_access_code, redirect_url) = fake_client.links[0]
    assert user_access_code == user_behind(app, submitted.headers["Location"])
    match = re.fullmatch(rf"{re.escape(EXTERNAL_URL)}/status/([A-Za-z0-9_.-]+)", redirect_url)
    assert match
    assert "evil.example" not in redirect_url
    assert "attacker.example" not in redirect_url
    assert "evil.example" not in response.text
    with app.app_context():
        assert load_status_token(match.group(1)) == user_access_code


def test_continue_redirect_url_keeps_external_path_when_external_url_has_a_prefix(configured):
    _, client, fake = configured(EXTERNAL_URL="https://example.org/onboarding")
    key = submit_key_from(client.get("/").text)
    submitted = client.post("/", data=dict(VALID_FORM, submit_key=key))

    response = client.get(submitted.headers["Location"])

    assert response.status_code == 200
    assert fake.links[0][1].startswith("https://example.org/onboarding/status/")


# The submit key


def test_submit_creates_one_user_when_same_key_is_sent_twice(app, onboarding, fake_client):
    key = onboarding.fresh_key()

    first = onboarding.submit(key=key)
    second = onboarding.submit(key=key)

    assert first.status_code == 303
    assert second.status_code == 303
    assert len(fake_client.users) == 1
    assert user_behind(app, first.headers["Location"]) == user_behind(
        app, second.headers["Location"]
    )


def test_submit_creates_one_user_when_back_and_resubmitted_with_edited_data(
    app, onboarding, fake_client
):
    key = onboarding.fresh_key()

    first = onboarding.submit(key=key)
    second = onboarding.submit(key=key, first_name="Danielle", email="danielle@example.org")

    assert second.status_code == 303
    assert [user.first_name for user in fake_client.users] == ["Dana"]
    assert user_behind(app, first.headers["Location"]) == user_behind(
        app, second.headers["Location"]
    )


def test_submit_creates_a_second_user_when_key_is_new(app, onboarding, fake_client):
    first = onboarding.submit()
    second = onboarding.submit(first_name="Danielle")

    assert first.status_code == 303
    assert second.status_code == 303
    assert [user.first_name for user in fake_client.users] == ["Dana", "Danielle"]
    assert user_behind(app, first.headers["Location"]) != user_behind(
        app, second.headers["Location"]
    )


def test_submit_answers_409_without_creating_when_same_key_is_still_in_flight(
    app, onboarding, fake_client
):
    key = onboarding.fresh_key()
    with app.app_context():
        assert store.claim_submission(key)

    response = onboarding.submit(key=key)

    assert response.status_code == 409
    assert IN_FLIGHT_TEXT in visible(response)
    assert fake_client.users == []
    assert input_value(response.text, "first_name") == "Dana"


@pytest.mark.parametrize(
    "tampered",
    [
        "short",
        "a" * 31,
        "a" * 65,
        "../../etc/passwd-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "key with spaces aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        '"><script>alert(1)</script>aaaaaaaaaaaaaaaaaaaaa',
        "",
    ],
)
def test_submit_replaces_submit_key_when_format_is_wrong(client, fake_client, tampered):
    data = dict(VALID_FORM, submit_key=tampered, consent="")

    response = client.post("/", data=data)

    assert response.status_code == 422
    replacement = submit_key_from(response.text)
    assert replacement != tampered
    assert KEY_PATTERN.fullmatch(replacement)
    assert "<script>alert(1)</script>" not in response.text
    assert fake_client.users == []


def test_submit_creates_user_under_a_new_key_when_key_is_tampered(
    app, client, onboarding, fake_client
):
    response = client.post("/", data=dict(VALID_FORM, submit_key="not-a-key"))

    assert response.status_code == 303
    assert len(fake_client.users) == 1
    with app.app_context():
        assert store.claim_submission("not-a-key")


# Authenticate failing while creating the user


def test_submit_answers_503_and_keeps_the_form_when_authenticate_is_unavailable(
    client, onboarding, fake_client
):
    fake_client.create_error = AuthenticateUnavailable("down")
    key = onboarding.fresh_key()

    response = client.post("/", data=dict(FILLED_FORM, submit_key=key))

    assert response.status_code == 503
    assert "Location" not in response.headers
    assert UNAVAILABLE_TEXT in visible(response)
    assert KEPT_TEXT in visible(response)
    assert_values_kept(response.text, FILLED_FORM)
    assert submit_key_from(response.text) == key
    assert fake_client.users == []


def test_submit_creates_one_user_when_retried_after_authenticate_recovers(
    app, client, onboarding, fake_client
):
    fake_client.create_error = AuthenticateUnavailable("down")
    failed = client.post("/", data=dict(FILLED_FORM, submit_key=onboarding.fresh_key()))
    fake_client.create_error = None
    retry = dict(FILLED_FORM, submit_key=submit_key_from(failed.text))

    first = client.post("/", data=retry)
    second = client.post("/", data=retry)

    assert failed.status_code == 503
    assert first.status_code == 303
    assert second.status_code == 303
    assert len(fake_client.users) == 1
    assert fake_client.users[0].first_name == "Siobhán"
    assert user_behind(app, first.headers["Location"]) == user_behind(
        app, second.headers["Location"]
    )


def test_submit_shows_upstream_message_with_422_when_authenticate_rejects(
    client, onboarding, fake_client
):
    fake_client.create_error = AuthenticateRejected("first name required", 400)
    key = onboarding.fresh_key()

    response = client.post("/", data=dict(FILLED_FORM, submit_key=key))

    assert response.status_code == 422
    assert "The verification service didn't accept these details: first name required" in visible(
        response
    )
    assert_values_kept(response.text, FILLED_FORM)
    assert submit_key_from(response.text) == key
    assert fake_client.users == []


def test_submit_answers_502_and_keeps_the_form_when_authenticate_answer_is_unexpected(
    client, onboarding, fake_client
):
    fake_client.create_error = AuthenticateUnexpectedResponse("no userAccessCode")
    key = onboarding.fresh_key()

    response = client.post("/", data=dict(FILLED_FORM, submit_key=key))

    assert response.status_code == 502
    assert UNEXPECTED_TEXT in visible(response)
    assert "no userAccessCode" not in response.text
    assert_values_kept(response.text, FILLED_FORM)
    assert submit_key_from(response.text) == key


def test_submit_escapes_upstream_message_when_it_holds_html(onboarding, fake_client):
    fake_client.create_error = AuthenticateRejected("<img src=x onerror=alert(1)>", 400)

    response = onboarding.submit()

    assert response.status_code == 422
    assert "<img src=x onerror=alert(1)>" not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text


# Authenticate failing while fetching the Medallion link


@pytest.mark.parametrize(
    "error",
    [
        AuthenticateUnavailable("down"),
        AuthenticateUnexpectedResponse("no token"),
    ],
)
def test_continue_answers_503_with_try_again_link_when_link_creation_fails(
    client, onboarding, fake_client, error
):
    location = onboarding.submit().headers["Location"]
    fake_client.link_error = error

    response = client.get(location)

    assert response.status_code == 503
    assert "We couldn't get your verification link" in visible(response)
    assert f'<a class="button" href="{location}">Try again</a>' in response.text
    assert "medallion-link" not in response.text
    assert len(fake_client.users) == 1


def test_continue_succeeds_without_a_second_user_when_retried_after_link_failure(
    client, onboarding, fake_client
):
    location = onboarding.submit().headers["Location"]
    fake_client.link_error = AuthenticateUnavailable("down")
    failed = client.get(location)
    fake_client.link_error = None
    try_again = unescape(re.search(r'href="([^"]+)">Try again</a>', failed.text).group(1))

    response = client.get(try_again)

    assert failed.status_code == 503
    assert response.status_code == 200
    assert 'id="medallion-link"' in response.text
    assert len(fake_client.users) == 1
    assert len(fake_client.links) == 1


def test_continue_redirects_to_status_page_when_verification_already_completed(
    client, onboarding, fake_client
):
    location = onboarding.submit().headers["Location"]
    fake_client.link_error = AuthenticateRejected("Verification already completed", 400)

    response = client.get(location)

    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{EXTERNAL_URL}/status/")
    assert not response.headers["Location"].endswith("/continue")


# CSRF


def test_submit_answers_400_without_creating_when_csrf_token_is_missing(configured):
    _, client, fake = configured(WTF_CSRF_ENABLED=True)
    key = submit_key_from(client.get("/").text)

    response = client.post("/", data=dict(VALID_FORM, submit_key=key))

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "Something was wrong with that request" in response.text
    assert fake.users == []


def test_submit_from_another_site_failing_csrf_gets_no_page_with_its_values(configured):
    _, client, fake = configured(WTF_CSRF_ENABLED=True)
    client.get("/")
    planted = dict(VALID_FORM, email="attacker@evil.example", delivery="email")

    response = client.post("/", data=planted, headers={"Origin": "https://evil.example"})

    assert response.status_code == 400
    assert "Something was wrong with that request" in response.text
    assert "attacker@evil.example" not in response.text
    assert fake.users == []


def test_submit_failing_csrf_never_keeps_a_submit_key_it_brought(configured):
    # Another site could choose the key, then send it itself to follow this verification.
    _, client, fake = configured(WTF_CSRF_ENABLED=True)
    own = submit_key_from(client.get("/").text)
    chosen = "k" * 43

    response = client.post(
        "/", data=dict(VALID_FORM, submit_key=chosen), headers={"Referer": f"{EXTERNAL_URL}/"}
    )

    assert response.status_code == 400
    assert "Your details are still here" in response.text
    assert submit_key_from(response.text) == own
    assert fake.users == []


def test_submit_that_outlived_its_csrf_token_comes_back_filled_in_and_goes_through(
    configured, monkeypatch
):
    app, client, fake = configured(WTF_CSRF_ENABLED=True)
    html = client.get("/").text
    key, token = submit_key_from(html), input_value(html, "csrf_token")
    later = time.time() + app.config["WTF_CSRF_TIME_LIMIT"] + 60
    monkeypatch.setattr(time, "time", lambda: later)

    expired = client.post(
        "/",
        data=dict(VALID_FORM, submit_key=key, csrf_token=token),
        headers={"Origin": EXTERNAL_URL},
    )

    assert expired.status_code == 400
    assert "Your details are still here" in expired.text
    for field in ("first_name", "last_name", "email", "birth_date"):
        assert input_value(expired.text, field) == VALID_FORM[field]
    assert input_value(expired.text, "submit_key") == key
    fresh = input_value(expired.text, "csrf_token")
    assert fresh != token
    assert fake.users == []

    resent = client.post("/", data=dict(VALID_FORM, submit_key=key, csrf_token=fresh))

    assert resent.status_code == 303
    assert len(fake.users) == 1


def test_submit_answers_400_without_creating_when_csrf_token_is_forged(configured):
    _, client, fake = configured(WTF_CSRF_ENABLED=True)
    key = submit_key_from(client.get("/").text)

    response = client.post("/", data=dict(VALID_FORM, submit_key=key, csrf_token="forged"))

    assert response.status_code == 400
    assert fake.users == []


def test_submit_creates_user_when_csrf_token_comes_from_the_form(configured):
    _, client, fake = configured(WTF_CSRF_ENABLED=True)
    html = client.get("/").text
    data = dict(
        VALID_FORM, submit_key=submit_key_from(html), csrf_token=input_value(html, "csrf_token")
    )

    response = client.post("/", data=data)

    assert response.status_code == 303
    assert CONTINUE_PATTERN.fullmatch(response.headers["Location"])
    assert len(fake.users) == 1


# Escaping


@pytest.mark.parametrize("field", ["first_name", "middle_name", "last_name", "email", "phone"])
def test_submit_escapes_typed_value_when_form_is_shown_again(onboarding, fake_client, field):
    typed = '"><script>alert(1)</script>'

    response = onboarding.submit(**{field: typed})

    assert response.status_code == 422
    assert "<script>alert(1)</script>" not in response.text
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    assert input_value(response.text, field) == typed
    assert fake_client.users == []


def test_submits_that_create_users_are_rate_limited_per_address(sqlite_url):
    app = make_app(sqlite_url, ONBOARDING_RATE_LIMIT="2 per hour")
    fake = FakeAuthenticate()
    app.extensions["portal.client"] = fake
    client = app.test_client()
    refused = client.post("/", data=dict(VALID_FORM, first_name="")).status_code
    answers = []
    for _ in range(3):
        client.post("/new")
        key = submit_key_from(client.get("/").text)
        answers.append(client.post("/", data=dict(VALID_FORM, submit_key=key)).status_code)
    assert refused == 422
    assert answers == [303, 303, 429]
    assert len(fake.users) == 2
