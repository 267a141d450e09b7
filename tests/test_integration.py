"""The whole flow over real HTTP: portal and sandbox on their own ports, no fakes."""

import re
import socket
import threading
from html import unescape
from urllib.parse import urljoin

import requests

from portal.client import AuthenticateClient
from tests.conftest import VALID_FORM, status_uuid


def hidden_inputs(html):
    """Return the hidden inputs of the first form in the page."""
    return {
        unescape(name): unescape(value)
        for name, value in re.findall(
            r'<input[^>]*name="([^"]+)"[^>]*type="hidden"[^>]*value="([^"]*)"', html
        )
        + re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', html)
    }


def href_of(html, element_id):
    return unescape(re.search(rf'id="{element_id}" href="([^"]+)"', html).group(1))


def onboard(live, session, form=None, headers=None):
    """Fill in the form and follow the portal to the Medallion link; return (link, history)."""
    page = session.get(f"{live.portal_url}/", headers=headers, timeout=5)
    data = dict(form or VALID_FORM, **hidden_inputs(page.text))
    submitted = session.post(
        f"{live.portal_url}/", data=data, headers=headers, allow_redirects=False, timeout=10
    )
    assert submitted.status_code == 303, submitted.text
    next_step = session.get(
        urljoin(live.portal_url, submitted.headers["Location"]), headers=headers, timeout=10
    )
    assert next_step.status_code == 200
    return href_of(next_step.text, "medallion-link"), [submitted.headers["Location"]]


def complete_medallion(session, link, outcome, headers=None):
    """Pick an outcome on the sandbox's Medallion page; return the portal URL it sends us to."""
    page = session.get(link, headers=headers, timeout=5)
    assert page.status_code == 200
    action = re.search(r'<form[^>]*action="([^"]+)"', page.text).group(1)
    data = dict(hidden_inputs(page.text), outcome=outcome)
    done = session.post(
        urljoin(link, unescape(action)),
        data=data,
        headers=headers,
        allow_redirects=False,
        timeout=5,
    )
    assert done.status_code == 303
    return done.headers["Location"]


def uuid_behind(live, link):
    token = re.search(r"token=([^&]+)", link).group(1)
    return live.sandbox_json(f"/user/medallion/{token}/status")["userAccessCode"]


def test_onboarding_reaches_verified_over_real_http(live):
    with requests.Session() as session:
        link, _ = onboard(live, session)
        assert link.startswith(f"{live.sandbox_url}/?token=")
        back = complete_medallion(session, link, "verified")
        assert back.startswith(f"{live.portal_url}/status/")
        user_access_code = uuid_behind(live, link)
        assert live.wait_for_state(user_access_code, "verified") == "verified"
        status = session.get(back, timeout=5)
        poll = session.get(back + ".json", timeout=5).json()
    assert "Verified" in status.text
    assert poll["state"] == "verified" and poll["terminal"] is True
    assert live.sandbox_json("/_sandbox/users")["count"] == 1


def test_onboarding_failed_outcome_shows_failed(live):
    with requests.Session() as session:
        link, _ = onboard(live, session)
        complete_medallion(session, link, "failed")
        assert live.wait_for_state(uuid_behind(live, link), "failed") == "failed"


def test_resubmitting_the_same_form_creates_one_sandbox_user(live):
    with requests.Session() as session:
        page = session.get(f"{live.portal_url}/", timeout=5)
        data = dict(VALID_FORM, **hidden_inputs(page.text))
        first = session.post(f"{live.portal_url}/", data=data, allow_redirects=False, timeout=10)
        second = session.post(f"{live.portal_url}/", data=data, allow_redirects=False, timeout=10)
    assert first.status_code == second.status_code == 303
    first_uuid = status_uuid(live.portal_app, first.headers["Location"])
    assert first_uuid == status_uuid(live.portal_app, second.headers["Location"])
    assert live.sandbox_json("/_sandbox/users")["count"] == 1


def test_submit_with_sandbox_stopped_keeps_the_form_and_says_why(live):
    config = dict(live.portal_app.config, AUTHENTICATE_API_URL="http://127.0.0.1:9")
    live.portal_app.extensions["portal.client"] = AuthenticateClient.from_config(config)
    form = dict(VALID_FORM, first_name="Saldaña-Pérez", email="keep.me@example.org")
    with requests.Session() as session:
        page = session.get(f"{live.portal_url}/", timeout=5)
        answer = session.post(
            f"{live.portal_url}/", data=dict(form, **hidden_inputs(page.text)), timeout=10
        )
    assert answer.status_code == 503
    assert "couldn&#39;t reach the verification service" in answer.text
    assert 'value="Saldaña-Pérez"' in answer.text
    assert 'value="keep.me@example.org"' in answer.text


def test_submit_with_a_hanging_upstream_answers_within_the_read_timeout(live):
    """An upstream that accepts but never answers: the portal's own timeout must end it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def hold():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    config = dict(
        live.portal_app.config,
        AUTHENTICATE_API_URL=f"http://127.0.0.1:{listener.getsockname()[1]}",
        AUTHENTICATE_READ_TIMEOUT=0.5,
    )
    live.portal_app.extensions["portal.client"] = AuthenticateClient.from_config(config)
    try:
        with requests.Session() as session:
            page = session.get(f"{live.portal_url}/", timeout=5)
            data = dict(VALID_FORM, **hidden_inputs(page.text))
            # Far longer than the portal's budget: if the portal had no timeout, this raises.
            answer = session.post(f"{live.portal_url}/", data=data, timeout=20)
    finally:
        stop.set()
        holder.join()
        for conn in accepted:
            conn.close()
        listener.close()
    assert answer.status_code == 503
    assert 'value="Dana"' in answer.text
    assert accepted, "the portal never called the upstream"
