import re
from datetime import UTC, datetime
from html import unescape
from urllib.parse import urlsplit

import pytest
from itsdangerous import TimestampSigner

from portal import store
from portal.client import AuthenticateRejected, AuthenticateUnavailable
from portal.config import status_map
from portal.extensions import db
from portal.helpers import STATUS_PURPOSE
from portal.tokens import LinkSigner
from tests.conftest import TEST_SECRET_KEY, TEST_WEBHOOK_SECRET

UAC = "3f6c2a9e-8d41-4b7a-9c15-2e0d7b6a41f3"
EXTERNAL_URL = "https://portal.example.test"
SUPPORT = "the Zq help desk at help@example.test"
CONTINUE_PARAGRAPH = re.compile(r'<p id="continue"( hidden)?>')

STATES = [
    (
        "pending",
        "Waiting for you to start verification",
        "Continue to the verification page",
        False,
    ),
    ("in_progress", "Verification in progress", "we'll keep checking", False),
    ("needs_review", "Under review", "Your verification is being reviewed", False),
    ("expired", "Verification not finished", "You can continue where you left off", False),
    ("verified", "Verified", "Your identity has been verified", True),
    ("failed", "Verification failed", f"Please contact {SUPPORT} for help", True),
]
NOT_TERMINAL = [state for state, *_, terminal in STATES if not terminal]
TERMINAL = [state for state, *_, terminal in STATES if terminal]
# Under review there is nothing left to do on Medallion: a new link would start over.
CONTINUABLE = [state for state in NOT_TERMINAL if state != "needs_review"]


def sign(uac=UAC, secret=TEST_SECRET_KEY, purpose=STATUS_PURPOSE):
    return LinkSigner(secret, purpose).dumps(uac)


@pytest.fixture
def verification(app):
    """Create the record in a given state; return its status token."""

    def create(state="pending", uac=UAC):
        app.config["SUPPORT_CONTACT"] = SUPPORT
        with app.app_context():
            store.add_verification(uac, f"key-{uac}")
            store.get_verification(uac).state = state
            db.session.commit()
        return sign(uac)

    return create


def page_text(response):
    return unescape(response.text)


def link_issued_at(app):
    with app.app_context():
        return store.get_verification(UAC).link_issued_at


def token_in(url):
    path = urlsplit(url).path
    assert path.startswith("/status/")
    return path.removeprefix("/status/")


def signed_long_ago(monkeypatch, seconds):
    """Sign a token as if it had been issued `seconds` ago."""
    now = TimestampSigner("k").get_timestamp()
    with monkeypatch.context() as patched:
        patched.setattr(TimestampSigner, "get_timestamp", lambda self: now - seconds)
        return sign()


# --- the page ----------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "title", "detail", "terminal"), STATES)
def test_status_page_says_the_state_in_plain_words(
    client, verification, state, title, detail, terminal
):
    token = verification(state)

    response = client.get(f"/status/{token}")

    text = page_text(response)
    assert response.status_code == 200
    assert f'<p class="status-title" id="status-title">{title}</p>' in text
    assert detail in text
    assert (SUPPORT in text) is (state == "failed")
    assert "Page not found" not in text


@pytest.mark.parametrize(("state", "title", "detail", "terminal"), STATES)
def test_status_page_offers_continue_and_refresh_only_while_not_terminal(
    client, verification, state, title, detail, terminal
):
    token = verification(state)

    response = client.get(f"/status/{token}")

    [hidden] = CONTINUE_PARAGRAPH.findall(response.text)
    # Under review, going back to Medallion would start a verification over: no button.
    assert (hidden == " hidden") is (terminal or state == "needs_review")
    assert f'href="/status/{token}/continue"' in response.text
    assert ('<noscript><meta http-equiv="refresh"' in response.text) is not terminal
    assert f'data-terminal="{str(terminal).lower()}"' in response.text


@pytest.mark.parametrize("state", ["pending", "verified"])
def test_status_page_is_private_polite_and_polls(client, verification, state):
    token = verification(state)

    response = client.get(f"/status/{token}")

    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert 'role="status" aria-live="polite"' in response.text
    assert '<script src="/static/status.js" defer></script>' in response.text
    assert f'data-poll-url="/status/{token}.json"' in response.text
    assert 'data-poll-seconds="3"' in response.text


# --- the JSON poll -----------------------------------------------------------------------


@pytest.mark.parametrize(("state", "title", "detail", "terminal"), STATES)
def test_status_poll_answers_the_state_as_json(
    client, verification, state, title, detail, terminal
):
    token = verification(state)

    response = client.get(f"/status/{token}.json")

    assert response.status_code == 200
    body = response.get_json()
    assert {"state", "title", "detail", "terminal"} <= body.keys()
    assert (body["state"], body["title"], body["terminal"]) == (state, title, terminal)
    assert detail in body["detail"]
    assert response.headers["ETag"]
    assert response.headers["Cache-Control"] == "no-store"


def test_status_poll_answers_304_until_the_state_changes(client, verification):
    token = verification("pending")
    first = client.get(f"/status/{token}.json")
    etag = first.headers["ETag"]

    unchanged = client.get(f"/status/{token}.json", headers={"If-None-Match": etag})
    stale = client.get(f"/status/{token}.json", headers={"If-None-Match": '"not-the-etag"'})
    delivered = client.post(
        f"/webhooks/authenticate/{TEST_WEBHOOK_SECRET}",
        json={
            "id": "evt-1",
            "event": "SELF_VERIFICATION_TRY_STATUS",
            "eventDate": "2025-03-14T16:05:09.412Z",
            "order": {"userAccessCode": UAC, "status": "verified"},
        },
    )
    changed = client.get(f"/status/{token}.json", headers={"If-None-Match": etag})

    assert (unchanged.status_code, unchanged.data) == (304, b"")
    assert unchanged.headers["ETag"] == etag
    assert stale.status_code == 200
    assert delivered.status_code == 200
    assert changed.status_code == 200
    assert changed.get_json()["state"] == "verified"
    assert changed.get_json()["terminal"] is True
    assert changed.headers["ETag"] != etag
    again = client.get(f"/status/{token}.json", headers={"If-None-Match": changed.headers["ETag"]})
    assert again.status_code == 304


# --- bad and expired links ---------------------------------------------------------------


def tampered(token):
    """Change one character inside the signature (the last one may only carry padding bits)."""
    at = len(token) - 5
    return token[:at] + ("x" if token[at] != "x" else "y") + token[at + 1 :]


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(tampered, id="signature-changed"),
        pytest.param(lambda token: token[:-5], id="truncated"),
        pytest.param(lambda token: "not-a-token", id="garbage"),
        pytest.param(lambda token: sign(secret="another-secret-key"), id="other-secret"),
        pytest.param(lambda token: sign(purpose="password-reset"), id="other-purpose"),
        pytest.param(
            lambda token: sign(uac="00000000-0000-4000-8000-000000000000"), id="unknown-uuid"
        ),
    ],
)
@pytest.mark.parametrize("suffix", ["", "/continue"])
def test_status_answers_404_for_a_link_it_cannot_trust(
    client, verification, fake_client, make_token, suffix
):
    token = make_token(verification("pending"))

    response = client.get(f"/status/{token}{suffix}")

    assert response.status_code == 404
    assert "This link doesn't work" in page_text(response)
    assert "Waiting for you to start" not in response.text
    assert UAC not in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert fake_client.links == []


def test_status_poll_answers_404_json_for_a_link_it_cannot_trust(client, verification):
    token = tampered(verification("pending"))

    response = client.get(f"/status/{token}.json")

    assert response.status_code == 404
    assert response.get_json() == {"error": "not found"}


@pytest.mark.parametrize("suffix", ["", "/continue"])
def test_status_answers_410_for_an_expired_link(
    app, client, verification, fake_client, monkeypatch, suffix
):
    verification("pending")
    token = signed_long_ago(monkeypatch, app.config["STATUS_LINK_MAX_AGE"] + 60)

    response = client.get(f"/status/{token}{suffix}")

    assert response.status_code == 410
    assert "<h1>This link has expired</h1>" in response.text
    assert "status links stop working after\n30 days" in response.text
    assert "Waiting for you to start" not in response.text
    assert fake_client.links == []


def test_status_poll_answers_410_json_for_an_expired_link(app, client, verification, monkeypatch):
    verification("pending")
    token = signed_long_ago(monkeypatch, app.config["STATUS_LINK_MAX_AGE"] + 60)

    response = client.get(f"/status/{token}.json")

    assert response.status_code == 410
    assert response.get_json() == {"error": "expired"}


def test_status_accepts_a_link_just_inside_its_max_age(app, client, verification, monkeypatch):
    verification("pending")
    token = signed_long_ago(monkeypatch, app.config["STATUS_LINK_MAX_AGE"] - 60)

    response = client.get(f"/status/{token}")

    assert response.status_code == 200
    assert "Waiting for you to start verification" in response.text


# --- continue ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", CONTINUABLE)
def test_continue_shows_a_fresh_medallion_link_while_there_is_something_to_do(
    app, client, verification, fake_client, state
):
    token = verification(state)

    response = client.get(f"/status/{token}/continue")

    [(uac, redirect_url)] = fake_client.links
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert 'href="https://verify.invalid/?token=' in response.text
    assert re.search(
        r'id="medallion-link" href="https://verify\.invalid/\?token=[0-9a-f-]+"', response.text
    )
    assert uac == UAC
    assert redirect_url.startswith(f"{EXTERNAL_URL}/status/")
    assert LinkSigner(TEST_SECRET_KEY, STATUS_PURPOSE).loads(token_in(redirect_url), 60) == UAC
    assert link_issued_at(app) is not None


@pytest.mark.parametrize("state", [*TERMINAL, "needs_review"])
def test_continue_sends_a_reviewed_or_decided_user_back_to_the_status_page(
    app, client, verification, fake_client, state
):
    token = verification(state)

    response = client.get(f"/status/{token}/continue")

    assert response.status_code == 303
    assert response.location.startswith(f"{EXTERNAL_URL}/status/")
    assert LinkSigner(TEST_SECRET_KEY, STATUS_PURPOSE).loads(token_in(response.location), 60) == UAC
    assert fake_client.links == []
    assert link_issued_at(app) is None


def test_continue_sends_the_user_to_status_when_authenticate_says_already_completed(
    app, client, verification, fake_client
):
    token = verification("pending")
    fake_client.link_error = AuthenticateRejected("User has already completed verification.", 400)

    response = client.get(f"/status/{token}/continue")

    assert response.status_code == 303
    assert response.location.startswith(f"{EXTERNAL_URL}/status/")
    assert link_issued_at(app) is None


def test_continue_answers_503_with_a_retry_link_when_no_link_is_available(
    app, client, verification, fake_client
):
    token = verification("pending")
    fake_client.link_error = AuthenticateUnavailable("down")

    response = client.get(f"/status/{token}/continue")

    text = page_text(response)
    assert response.status_code == 503
    assert "We couldn't get your verification link" in text
    assert "you don't need to fill in the form again" in text
    assert f'href="/status/{token}/continue">Try again</a>' in text
    assert link_issued_at(app) is None


def test_continue_says_start_again_when_authenticate_refuses_the_link(
    app, client, verification, fake_client
):
    token = verification("pending")
    fake_client.link_error = AuthenticateRejected("Unknown userAccessCode.", 400)

    response = client.get(f"/status/{token}/continue")

    text = page_text(response)
    assert response.status_code == 502
    assert "We can't continue this verification" in text
    assert "trying again won't help" in text
    assert 'action="/new"' in text
    assert link_issued_at(app) is None


def test_continue_works_again_after_authenticate_recovers(app, client, verification, fake_client):
    token = verification("pending")
    fake_client.link_error = AuthenticateUnavailable("down")
    failed = client.get(f"/status/{token}/continue")
    fake_client.link_error = None

    retried = client.get(f"/status/{token}/continue")

    assert (failed.status_code, retried.status_code) == (503, 200)
    assert len(fake_client.links) == 1


@pytest.mark.parametrize(
    ("state", "looks"),
    [
        ("pending", ["done", "current", "todo", "todo"]),
        ("in_progress", ["done", "current", "todo", "todo"]),
        ("needs_review", ["done", "done", "current", "todo"]),
        ("verified", ["done", "done", "skipped", "done"]),
        ("failed", ["done", "done", "skipped", "failed"]),
    ],
)
def test_status_timeline_shows_where_the_person_is(client, verification, state, looks):
    token = verification(state)

    page = client.get(f"/status/{token}").text
    poll = client.get(f"/status/{token}.json").json

    assert re.findall(r'<li class="(\w+)"', page) == looks
    assert poll["timeline"] == looks
    assert poll["can_continue"] is (state in ("pending", "in_progress"))


def test_status_timeline_shows_review_done_when_a_decision_followed_review(app, client):
    token = sign(UAC)
    with app.app_context():
        store.add_verification(UAC, "key-reviewed")
        for n, status in enumerate(["review", "verified"]):
            event = store.IncomingEvent(
                event_id=f"evt-{n}",
                event_type=store.STATUS_EVENT,
                user_access_code=UAC,
                raw_status=status,
                verification_method="governmentId",
                event_date=datetime(2026, 3, 14, 16, n, tzinfo=UTC),
            )
            store.record_event(event, status_map(app.config))

    assert client.get(f"/status/{token}.json").json["timeline"] == ["done"] * 4


def test_status_page_says_waiting_for_the_result_once_a_link_went_out(app, client, verification):
    token = verification("pending")
    with app.app_context():
        store.mark_link_issued(UAC, "medallion-token")
    page = page_text(client.get(f"/status/{token}"))
    poll = client.get(f"/status/{token}.json").json
    assert "Waiting for the result" in page
    assert "Waiting for you to start" not in page
    assert poll["title"] == "Waiting for the result"
    assert poll["can_continue"] is True
