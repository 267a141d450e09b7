"""Behind proxies and across instances: forwarded headers, links, client addresses, CSRF."""

import email
import email.policy
import functools
import re

import pytest

from tests.conftest import VALID_FORM, Onboarding, make_app, submit_key_from

EXTERNAL_URL = "https://portal.example.test"
EVIL = "evil.example"
# Everything a client can send to make the portal believe it is served from another host.
FORGED = {
    "Host": EVIL,
    "X-Forwarded-Host": EVIL,
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Prefix": f"//{EVIL}",
    "X-Original-Host": EVIL,
}
PROXY = "10.0.0.2"


@pytest.fixture
def build(build, tmp_path):
    """conftest's `build`, each app writing its mail to tmp_path/outbox (see outbox_text)."""
    outbox = str(tmp_path / "outbox")
    return functools.partial(build, MAIL_BACKEND="outbox", MAIL_OUTBOX_DIR=outbox)


def outbox_text(tmp_path):
    parts = []
    for path in sorted((tmp_path / "outbox").glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        parts.extend(part.get_content() for part in message.walk() if not part.is_multipart())
    return "\n".join(parts)


def forged_client(app):
    client = app.test_client()
    client.environ_base.update(REMOTE_ADDR=PROXY)
    return client


def forged_submit(client, **fields):
    client.post("/new", headers=FORGED)
    key = submit_key_from(client.get("/", headers=FORGED).text)
    return client.post("/", data=dict(VALID_FORM, submit_key=key, **fields), headers=FORGED)


@pytest.mark.parametrize("trusted", [0, 1, 2])
def test_forged_host_headers_reach_no_link_redirect_or_email(build, tmp_path, trusted):
    app, fake = build(TRUSTED_PROXIES=trusted)
    client = forged_client(app)

    now = forged_submit(client, delivery="now")
    page = client.get(now.headers["Location"], headers=FORGED)
    emailed = forged_submit(client, delivery="email")
    emailed_page = client.get(emailed.headers["Location"], headers=FORGED)

    assert now.status_code == emailed.status_code == 303
    for response in (now, emailed):
        assert response.headers["Location"].startswith("/status/")
    [(_, redirect_url)] = fake.links
    assert redirect_url.startswith(f"{EXTERNAL_URL}/status/")
    assert EVIL not in page.text and EVIL not in emailed_page.text
    assert f'href="{EXTERNAL_URL}/resume/' in emailed_page.text
    mail = outbox_text(tmp_path)
    assert f"{EXTERNAL_URL}/resume/" in mail and f"{EXTERNAL_URL}/status/" in mail
    assert EVIL not in mail


def test_forged_host_headers_reach_no_admin_redirect(build):
    app, _ = build(TRUSTED_PROXIES=1)
    client = forged_client(app)

    response = client.get("/admin/records?state=failed", headers=FORGED)

    assert response.status_code == 303
    assert response.headers["Location"].startswith("/admin/login?next=")
    assert EVIL not in response.headers["Location"]


def submit_from(client, forwarded_for):
    """Submit a fresh valid form as the client behind `forwarded_for`; return the status."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    key = Onboarding(client).fresh_key()
    return client.post("/", data=dict(VALID_FORM, submit_key=key), headers=headers).status_code


def limited_app(build, trusted):
    app, _ = build(TRUSTED_PROXIES=trusted, ONBOARDING_RATE_LIMIT="1 per hour")
    return forged_client(app)


def test_forwarded_for_is_ignored_when_no_proxy_is_trusted(build):
    client = limited_app(build, trusted=0)

    assert submit_from(client, "203.0.113.1") == 303
    # Any X-Forwarded-For is the client's own words: the address is still the peer's.
    assert submit_from(client, "203.0.113.2") == 429
    assert submit_from(client, None) == 429


def test_one_trusted_proxy_makes_its_last_hop_the_client_address(build):
    client = limited_app(build, trusted=1)

    assert submit_from(client, "198.51.100.7, 203.0.113.1") == 303
    # The client forged the first entry; the hop our proxy appended is still 203.0.113.1.
    assert submit_from(client, "198.51.100.99, 203.0.113.1") == 429
    assert submit_from(client, "203.0.113.1") == 429
    # Another client behind the same proxy has its own count.
    assert submit_from(client, "203.0.113.2") == 303


def test_two_trusted_proxies_use_the_second_hop_from_the_end(build):
    client = limited_app(build, trusted=2)

    assert submit_from(client, "198.51.100.7, 203.0.113.1, 10.0.0.9") == 303
    assert submit_from(client, "203.0.113.1, 10.0.0.8") == 429
    assert submit_from(client, "203.0.113.2, 10.0.0.9") == 303


def test_an_unusable_trusted_proxies_setting_stops_the_app(tmp_path):
    with pytest.raises(RuntimeError, match="PORTAL_TRUSTED_PROXIES must be a whole number"):
        make_app(f"sqlite:///{tmp_path / 'bad.sqlite3'}", TRUSTED_PROXIES="one")


def csrf_token_from(html):
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def submit_across(first, second):
    """Get the form from `first`, then post it to `second` with first's session and token."""
    on_first, on_second = first.test_client(), second.test_client()
    html = on_first.get("/").text
    on_second.set_cookie("session", on_first.get_cookie("session").value)
    data = dict(VALID_FORM, csrf_token=csrf_token_from(html), submit_key=submit_key_from(html))
    return on_second.post("/", data=data)


def test_a_csrf_token_from_one_instance_is_accepted_by_another(build):
    # Two instances built from the same configuration, sharing one database: separate
    # create_app() objects, as two gunicorn processes on two machines would be.
    first, _ = build(WTF_CSRF_ENABLED=True)
    second, fake = build(first.config["SQLALCHEMY_DATABASE_URI"], WTF_CSRF_ENABLED=True)

    response = submit_across(first, second)

    assert response.status_code == 303
    assert len(fake.users) == 1


def test_a_csrf_token_is_refused_by_an_instance_with_another_secret_key(build):
    first, _ = build(WTF_CSRF_ENABLED=True)
    other, fake = build(WTF_CSRF_ENABLED=True, SECRET_KEY="another-secret-key")

    response = submit_across(first, other)

    assert response.status_code == 400
    assert fake.users == []
