"""Choosing "email me a link": the email, resume links, sending again, and the QR hand-off."""

import email
import email.policy
import logging
import re
import time
from html import unescape
from urllib.parse import urlsplit

import pytest
import requests
from itsdangerous import TimestampSigner
from sqlalchemy import select

from portal.extensions import db
from portal.models import Verification
from tests.conftest import VALID_FORM, FakeAuthenticate, make_app, status_uuid
from tests.servers import free_port
from tests.test_integration import complete_medallion, hidden_inputs, uuid_behind
from tests.test_mail import Recorder, start_smtpd  # noqa: F401 (fixture)
from tests.test_privacy import CANARY_AGENT, database_dump, session_cookie_payload

ADDRESS = "dana.okafor@example.org"
EMAIL_FORM = dict(VALID_FORM, delivery="email", email=ADDRESS)


@pytest.fixture
def outbox(tmp_path):
    return tmp_path / "outbox"


@pytest.fixture
def mail_app(sqlite_url, outbox):
    app = make_app(sqlite_url, MAIL_BACKEND="outbox", MAIL_OUTBOX_DIR=str(outbox))
    app.extensions["portal.client"] = FakeAuthenticate()
    yield app
    with app.app_context():
        db.engine.dispose()


def messages(outbox):
    files = sorted(outbox.glob("*.eml")) if outbox.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]


def links_in(message):
    text = message.get_body(("plain",)).get_content()
    return {
        "resume": re.search(r"https?://\S+/resume/\S+", text).group(0),
        "status": re.search(r"https?://\S+/status/[^\s/]+(?=\s|$)", text).group(0),
    }


def submit(client, **fields):
    client.post("/new")
    return client.post("/", data=dict(EMAIL_FORM, **fields))


def test_email_choice_sends_one_message_and_shows_the_link_and_qr(mail_app, outbox):
    client = mail_app.test_client()
    answer = submit(client)
    assert answer.status_code == 303
    assert re.fullmatch(r"/status/[^/]+/emailed\?sent=1", answer.headers["Location"])

    page = client.get(answer.headers["Location"])
    [message] = messages(outbox)
    links = links_in(message)
    assert page.status_code == 200
    assert "Check your email" in page.text
    assert "<svg" in page.text and "QR code" in page.text
    assert (
        unescape(re.search(r'id="resume-link" href="([^"]+)"', page.text).group(1))
        == (links["resume"])
    )
    assert message["To"] == ADDRESS
    assert "Hello Dana," in message.get_body(("plain",)).get_content()
    assert ADDRESS not in answer.headers["Location"]


def test_links_in_the_email_work_when_followed(mail_app, outbox):
    client = mail_app.test_client()
    submit(client)
    links = links_in(messages(outbox)[0])
    fake = mail_app.extensions["portal.client"]

    resumed = client.get(urlsplit(links["resume"]).path)
    status = client.get(urlsplit(links["status"]).path)

    assert resumed.status_code == 303
    assert resumed.headers["Location"].startswith("https://verify.invalid/?token=")
    assert resumed.headers["Cache-Control"] == "no-store"
    # Medallion is sent back to the same status page (re-signed, so compare what it holds).
    assert status_uuid(mail_app, fake.links[-1][1]) == status_uuid(mail_app, links["status"])
    assert status.status_code == 200 and "Your verification" in status.text


def test_resubmitting_the_email_form_sends_no_second_email(mail_app, outbox):
    client = mail_app.test_client()
    key = re.search(r'name="submit_key" type="hidden" value="([^"]+)"', client.get("/").text)
    data = dict(EMAIL_FORM, submit_key=key.group(1))
    first = client.post("/", data=data)
    second = client.post("/", data=data)

    assert len(messages(outbox)) == 1
    assert len(mail_app.extensions["portal.client"].users) == 1
    assert "sent=" not in second.headers["Location"]
    assert client.get(second.headers["Location"]).status_code == 200
    assert re.sub(r"/status/[^/?]+", "", first.headers["Location"].split("?")[0]) == re.sub(
        r"/status/[^/?]+", "", second.headers["Location"]
    )
    assert status_uuid(mail_app, first.headers["Location"]) == status_uuid(
        mail_app, second.headers["Location"]
    )


def test_email_failure_shows_the_link_on_the_page_instead(sqlite_url):
    app = make_app(
        sqlite_url,
        MAIL_BACKEND="smtp",
        MAIL_SMTP_HOST="127.0.0.1",
        MAIL_SMTP_PORT=free_port(),
        MAIL_SMTP_SECURITY="none",
    )
    app.extensions["portal.client"] = FakeAuthenticate()
    client = app.test_client()
    answer = submit(client)
    page = client.get(answer.headers["Location"])

    assert answer.headers["Location"].endswith("sent=0")
    assert page.status_code == 200
    assert "We couldn't send the email" in page.text
    assert "/resume/" in page.text and "<svg" in page.text


def test_send_again_from_the_emailed_page_mails_a_new_link_and_is_rate_limited(mail_app, outbox):
    client = mail_app.test_client()
    location = submit(client).headers["Location"]
    token = location.split("/")[2]
    answers = [
        client.post(f"/status/{token}/email", data={"email": "other@example.org"}).status_code
        for _ in range(4)
    ]

    assert answers == [303, 303, 303, 429]
    assert [m["To"] for m in messages(outbox)] == [ADDRESS] + ["other@example.org"] * 3


@pytest.mark.parametrize("typed", ["not-an-email", "a@example.org\r\nBcc: evil@example.org"])
def test_send_again_refuses_a_bad_address_without_sending(mail_app, outbox, typed):
    client = mail_app.test_client()
    token = submit(client).headers["Location"].split("/")[2]
    answer = client.post(f"/status/{token}/email", data={"email": typed})

    assert answer.status_code == 422
    assert "Enter a valid email address" in answer.text
    assert len(messages(outbox)) == 1


def resume_path(mail_app, outbox):
    client = mail_app.test_client()
    submit(client)
    return client, urlsplit(links_in(messages(outbox)[-1])["resume"]).path


def test_expired_resume_link_offers_to_email_a_new_one(mail_app, outbox, monkeypatch):
    client, path = resume_path(mail_app, outbox)
    later = time.time() + mail_app.config["RESUME_LINK_MAX_AGE"] + 60
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(later))

    expired = client.get(path)
    again = client.post(f"{path}/email", data={"email": ADDRESS})

    assert expired.status_code == 410
    assert "This link has expired" in expired.text
    assert f'action="{path}/email"' in expired.text
    assert again.status_code == 303 and again.headers["Location"].endswith("sent=2")
    assert len(messages(outbox)) == 2
    # The new link is fresh: it works at the time it was sent.
    fresh = urlsplit(links_in(messages(outbox)[-1])["resume"]).path
    assert client.get(fresh).status_code == 303


def test_tampered_resume_link_gets_a_clear_page_without_a_form(mail_app, outbox):
    client, path = resume_path(mail_app, outbox)
    broken = client.get(path[:-3] + "xyz")
    assert broken.status_code == 404
    assert "This link doesn't work" in broken.text
    assert "Email me a new link" not in broken.text
    assert client.post(path[:-3] + "xyz/email", data={"email": ADDRESS}).status_code == 404


# Under review, a new Medallion link would start the verification over.
@pytest.mark.parametrize("state", ["failed", "needs_review"])
def test_resume_link_shows_the_status_page_once_under_review_or_decided(mail_app, outbox, state):
    client, path = resume_path(mail_app, outbox)
    with mail_app.app_context():
        db.session.scalar(select(Verification)).state = state
        db.session.commit()
    answer = client.get(path)
    assert answer.status_code == 303
    assert "/status/" in answer.headers["Location"]
    assert mail_app.extensions["portal.client"].links == []


def test_next_step_page_shows_a_qr_code_of_the_resume_link(mail_app):
    client = mail_app.test_client()
    client.post("/new")
    answer = client.post("/", data=VALID_FORM)
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200
    assert 'class="segno"' in page.text
    assert "Scan this code with your phone" in page.text


# Over real HTTP and a real SMTP server: the mail's links complete a verification.


@pytest.fixture
def smtp_server(start_smtpd):  # noqa: F811 (fixture from test_mail)
    return start_smtpd(Recorder())


@pytest.fixture
def portal_config(smtp_server):
    return {
        "MAIL_BACKEND": "smtp",
        "MAIL_SMTP_HOST": "127.0.0.1",
        "MAIL_SMTP_PORT": smtp_server.port,
        "MAIL_SMTP_SECURITY": "none",
    }


def test_emailed_resume_link_completes_verification_over_real_http(live, smtp_server, caplog):
    caplog.set_level(logging.DEBUG)
    with requests.Session() as session:
        page = session.get(f"{live.portal_url}/", headers={"User-Agent": CANARY_AGENT}, timeout=5)
        data = dict(EMAIL_FORM, **hidden_inputs(page.text))
        answer = session.post(f"{live.portal_url}/", data=data, timeout=10)
        [message] = smtp_server.received()
        links = links_in(message)
        medallion = session.get(links["resume"], allow_redirects=False, timeout=10)
        link = medallion.headers["Location"]
        back = complete_medallion(session, link, "verified")
        cookies = [session_cookie_payload(c.value) for c in session.cookies if c.name == "session"]

    assert smtp_server.envelopes[0].rcpt_tos == [ADDRESS]
    assert link.startswith(f"{live.sandbox_url}/?token=")
    assert back.startswith(f"{live.portal_url}/status/")
    assert links["status"].startswith(f"{live.portal_url}/status/")
    assert live.wait_for_state(uuid_behind(live, link), "verified") == "verified"
    # The address went to the SMTP server and nowhere else the portal keeps.
    urls = [r.headers.get("Location", "") for r in answer.history] + [answer.url, link, back]
    # aiosmtpd ("mail.log") is the mail server, which is meant to see the address.
    logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))
    assert "link email for user" in logs
    for kept in (database_dump(live.portal_app), logs, "\n".join(cookies), "\n".join(urls)):
        assert "dana.okafor" not in kept.lower()


def test_qr_code_scales_with_its_box_instead_of_being_cropped(mail_app):
    client = mail_app.test_client()
    page = client.get(submit(client).headers["Location"]).text
    svg = re.search(r"<svg[^>]*>", page).group(0)
    assert "viewBox=" in svg
    assert "width=" not in svg and "height=" not in svg


def test_typos_in_send_again_do_not_use_up_the_limit(mail_app, outbox):
    client = mail_app.test_client()
    token = submit(client).headers["Location"].split("/")[2]
    typos = [
        client.post(f"/status/{token}/email", data={"email": "nope"}).status_code for _ in range(5)
    ]
    good = client.post(f"/status/{token}/email", data={"email": ADDRESS}).status_code
    assert typos == [422] * 5
    assert good == 303
    assert len(messages(outbox)) == 2


def test_send_again_says_another_link_went_out(mail_app, outbox):
    client = mail_app.test_client()
    token = submit(client).headers["Location"].split("/")[2]
    answer = client.post(f"/status/{token}/email", data={"email": ADDRESS})
    page = client.get(answer.headers["Location"])
    assert "We've sent you another link." in page.text


def test_send_again_sends_nothing_once_there_is_nothing_to_do(mail_app, outbox):
    client = mail_app.test_client()
    token = submit(client).headers["Location"].split("/")[2]
    sent_before = len(messages(outbox))
    with mail_app.app_context():
        db.session.scalar(select(Verification)).state = "needs_review"
        db.session.commit()

    answer = client.post(f"/status/{token}/email", data={"email": ADDRESS})

    assert answer.status_code == 303
    assert "being reviewed" in client.get(answer.headers["Location"]).text
    assert len(messages(outbox)) == sent_before


@pytest.mark.parametrize(
    ("state", "heading"),
    [("verified", "Your verification is decided"), ("needs_review", "being reviewed")],
)
def test_emailed_page_offers_no_link_once_there_is_nothing_to_do(mail_app, outbox, state, heading):
    client = mail_app.test_client()
    location = submit(client).headers["Location"]
    with mail_app.app_context():
        db.session.scalar(select(Verification)).state = state
        db.session.commit()
    page = client.get(location).text
    assert heading in page
    assert "/resume/" not in page and "Email me a new link" not in page
