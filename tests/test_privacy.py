"""PII canary: distinctive values go in every field; none may come out anywhere we keep."""

import base64
import email
import email.policy
import logging
import re
import zlib

import pytest
import requests
from sqlalchemy import select

from portal.extensions import db
from tests.conftest import VALID_FORM
from tests.test_integration import complete_medallion, hidden_inputs, href_of, uuid_behind

CANARY_FORM = dict(
    VALID_FORM,
    first_name="Zqwfirstcanary",
    middle_name="Zqwmiddlecanary",
    last_name="Zqwlastcanary",
    birth_date="1971-03-29",
    email="zqw.mail.canary@example.org",
    phone="+44 20 7946 0321",
    country="ISL",
)
CANARY_AGENT = "ZqwAgentCanary/9.1"
CANARIES = [
    "Zqwfirstcanary",
    "Zqwmiddlecanary",
    "Zqwlastcanary",
    "1971-03-29",
    "29-03-1971",
    "zqw.mail.canary",
    "example.org",
    "2079460321",
    "7946 0321",
    CANARY_AGENT,
    "ZqwAgent",
]


def session_cookie_payload(value):
    """Decode Flask's signed session cookie (optionally zlib-compressed JSON)."""
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if compressed else raw).decode()


def database_dump(app):
    """Every value in every column of every table, as text."""
    values = []
    with app.app_context():
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(select(table)):
                values.extend(str(value) for value in row)
    return "\n".join(values)


def test_no_personal_data_in_database_logs_cookies_or_urls(live, caplog, json_log):
    caplog.set_level(logging.DEBUG)
    headers = {"User-Agent": CANARY_AGENT}
    urls, cookies = [], []
    with requests.Session() as session:
        page = session.get(f"{live.portal_url}/", headers=headers, timeout=5)
        data = dict(CANARY_FORM, **hidden_inputs(page.text))
        submitted = session.post(f"{live.portal_url}/", data=data, headers=headers, timeout=10)
        urls += [r.headers.get("Location", "") for r in submitted.history] + [submitted.url]
        cookies += [r.headers.get("Set-Cookie", "") for r in [page, submitted, *submitted.history]]
        link = href_of(submitted.text, "medallion-link")
        back = complete_medallion(session, link, "verified", headers=headers)
        urls += [link, back]
        user_access_code = uuid_behind(live, link)
        assert live.wait_for_state(user_access_code, "verified") == "verified"
        status = session.get(back, headers=headers, timeout=5)
        cookies.append(status.headers.get("Set-Cookie", ""))
        cookies += [session_cookie_payload(c.value) for c in session.cookies if c.name == "session"]

    kept = {
        "database": database_dump(live.portal_app),
        "logs": caplog.text,
        "log lines": json_log.text,
        "cookies": "\n".join(cookies),
        "urls": "\n".join(urls),
    }
    # The canary test must see real material, or it proves nothing.
    assert user_access_code in kept["database"]
    assert user_access_code in kept["logs"]
    assert user_access_code in kept["log lines"]
    assert {("POST", "/", 303), ("GET", "/status/<token>", 200)} <= {
        (line["method"], line["route"], line["status"]) for line in json_log.access()
    }
    assert "csrf_token" in kept["cookies"]
    assert "/status/" in kept["urls"]
    leaks = [
        (where, canary)
        for where, text in kept.items()
        for canary in CANARIES
        if canary.lower() in text.lower()
    ]
    assert leaks == []


@pytest.fixture
def portal_config(tmp_path):
    return {"MAIL_BACKEND": "outbox", "MAIL_OUTBOX_DIR": str(tmp_path / "outbox")}


def test_email_path_keeps_personal_data_only_in_the_outbox_message(
    live, caplog, json_log, tmp_path
):
    caplog.set_level(logging.DEBUG)
    headers = {"User-Agent": CANARY_AGENT}
    with requests.Session() as session:
        page = session.get(f"{live.portal_url}/", headers=headers, timeout=5)
        data = dict(CANARY_FORM, delivery="email", **hidden_inputs(page.text))
        submitted = session.post(f"{live.portal_url}/", data=data, headers=headers, timeout=10)
        [eml] = (tmp_path / "outbox").glob("*.eml")
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        text = message.get_body(("plain",)).get_content()
        resume = re.search(r"http://\S+/resume/\S+", text).group(0)
        medallion = session.get(resume, headers=headers, allow_redirects=False, timeout=10)
        back = complete_medallion(session, medallion.headers["Location"], "verified", headers)
        assert (
            live.wait_for_state(uuid_behind(live, medallion.headers["Location"]), "verified")
            == "verified"
        )
        cookies = [session_cookie_payload(c.value) for c in session.cookies if c.name == "session"]
    urls = [r.headers.get("Location", "") for r in submitted.history]
    urls += [submitted.url, resume, medallion.headers["Location"], back]
    kept = {
        "database": database_dump(live.portal_app),
        "logs": caplog.text,
        "log lines": json_log.text,
        "cookies": "\n".join(cookies),
        "urls": "\n".join(urls),
        "outbox file names": "\n".join(p.name for p in (tmp_path / "outbox").iterdir()),
    }
    assert "link email written to outbox file" in kept["logs"]
    assert "link email written to outbox file" in kept["log lines"]
    leaks = [
        (where, canary)
        for where, text in kept.items()
        for canary in CANARIES
        if canary.lower() in text.lower()
    ]
    assert leaks == []
    # The message itself is the one place the address may be: it is the email.
    assert message["To"] == "zqw.mail.canary@example.org"
