"""The link email, built by the library and sent to a real SMTP server on a free port."""

import dataclasses
import email
import email.policy
import logging
import os
import re
import smtplib
import socket
import stat
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from portal.extensions import db
from portal.mail import LinkEmail, MailError, build_message, send_link_email
from tests.conftest import make_app
from tests.servers import free_port

ADDRESS = "dana.okafor@example.org"
RESUME_URL = "https://portal.example.test/resume/resume-token.abc"
STATUS_URL = "https://portal.example.test/status/status-token.def"
SENDER = "Identity check <no-reply@portal.example.test>"
SUBJECT = "Continue your identity verification"
LINK = LinkEmail(to=ADDRESS, first_name="Dana", resume_url=RESUME_URL, status_url=STATUS_URL)
EVIL = "evil@example.org"


class Recorder:
    """An aiosmtpd handler that keeps each envelope and answers DATA with `data_status`."""

    def __init__(self, data_status="250 OK", rcpt_status=None):
        self.envelopes = []
        self.data_status = data_status
        self.rcpt_status = rcpt_status
        self.logins = []
        self.port = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt_status:
            return self.rcpt_status
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return self.data_status

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        # handled=False: let the server answer 535 itself rather than stay silent.
        return AuthResult(success=auth_data.password == b"right", handled=False)

    def received(self):
        """Return each message the server accepted, parsed."""
        return [
            email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes
        ]


@pytest.fixture
def start_smtpd():
    controllers = []

    def start(handler=None, **smtp_options):
        handler = handler or Recorder()
        handler.port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=handler.port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return handler

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtpd(start_smtpd):
    return start_smtpd()


@pytest.fixture
def mail_app(tmp_path):
    apps = []

    def build(**config):
        app = make_app(f"sqlite:///{tmp_path / f'mail{len(apps)}.sqlite3'}", **config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def smtp_config(port, **extra):
    config = {
        "MAIL_BACKEND": "smtp",
        "MAIL_SENDER": SENDER,
        "MAIL_SUBJECT": SUBJECT,
        "MAIL_SMTP_HOST": "127.0.0.1",
        "MAIL_SMTP_PORT": port,
        "MAIL_SMTP_SECURITY": "none",
        "MAIL_SMTP_TIMEOUT": 2,
    }
    config.update(extra)
    return config


def send(app, link=LINK, instance_path=None):
    with app.app_context():
        return send_link_email(link, app.config, instance_path or app.instance_path)


def send_failure(app, link=LINK):
    """Send, expecting MailError; return it after checking it names no one."""
    with pytest.raises(MailError) as caught:
        send(app, link)
    assert ADDRESS not in str(caught.value)
    assert link.to not in str(caught.value)
    assert "Dana" not in str(caught.value)
    return caught.value


def bodies(message):
    """Return the text and HTML parts, with line ends as Python writes them."""
    return tuple(
        message.get_body((subtype,)).get_content().replace("\r\n", "\n")
        for subtype in ("plain", "html")
    )


def test_send_link_email_delivers_one_two_part_message_when_smtp(mail_app, smtpd, caplog):
    caplog.set_level(logging.INFO, logger="portal.mail")
    message_id = send(mail_app(**smtp_config(smtpd.port)))

    assert len(smtpd.envelopes) == 1
    assert smtpd.envelopes[0].rcpt_tos == [ADDRESS]
    assert smtpd.envelopes[0].mail_from == "no-reply@portal.example.test"
    [message] = smtpd.received()
    assert message["From"] == SENDER
    assert message["To"] == ADDRESS
    assert message["Subject"] == SUBJECT
    assert message["Date"].datetime.tzinfo is not None
    assert message["Message-ID"] == message_id
    assert re.fullmatch(r"<[^<>@\s]+@portal\.example\.test>", message_id)
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    text, html = bodies(message)
    assert text.startswith("Hello Dana,")
    assert "ideally on your phone:\n" + RESUME_URL in text
    assert STATUS_URL in text and "expires in 7 days" in text
    assert "If you didn't ask for this, you can ignore this email." in text
    assert "Hello Dana," in html
    assert f'<a href="{RESUME_URL}">' in html and f'<a href="{STATUS_URL}">' in html
    assert "<img" not in html
    assert [r.getMessage() for r in caplog.records if r.name == "portal.mail"] == [
        f"link email sent by SMTP as {message_id}"
    ]
    assert ADDRESS not in caplog.text and "Dana" not in caplog.text


def test_send_link_email_escapes_name_in_html_when_name_is_markup(mail_app, smtpd):
    hostile = LinkEmail(ADDRESS, "<b>x</b>", RESUME_URL, STATUS_URL)
    send(mail_app(**smtp_config(smtpd.port)), hostile)

    text, html = bodies(smtpd.received()[0])
    assert "Hello &lt;b&gt;x&lt;/b&gt;," in html
    assert "<b>" not in html
    assert text.startswith("Hello <b>x</b>,")


def test_send_link_email_logs_in_when_username_set(mail_app, start_smtpd):
    handler = Recorder()
    server = start_smtpd(handler, auth_require_tls=False, authenticator=handler.authenticate)
    config = smtp_config(server.port, MAIL_SMTP_USERNAME="user")

    send(mail_app(**config, MAIL_SMTP_PASSWORD="right"))
    error = send_failure(mail_app(**config, MAIL_SMTP_PASSWORD="wrong"))

    assert server.logins[0] == (b"user", b"right")
    assert set(server.logins[1:]) == {(b"user", b"wrong")}
    assert len(server.envelopes) == 1
    assert "SMTPAuthenticationError 535" in str(error)


@pytest.mark.parametrize(
    ("max_age", "expected"),
    [(3 * 86400, "expires in 3 days"), (86400, "expires in 1 day"), (3600, "within a day")],
)
def test_build_message_states_expiry_from_resume_link_max_age(mail_app, max_age, expected):
    app = mail_app(RESUME_LINK_MAX_AGE=max_age)
    with app.app_context():
        text, html = bodies(build_message(LINK, app.config))
    assert expected in text and expected in html


def test_build_message_greets_without_name_when_name_empty(app):
    with app.app_context():
        text, _ = bodies(build_message(LinkEmail(ADDRESS, "", RESUME_URL, STATUS_URL), app.config))
    assert text.startswith("Hello,\n")


def test_build_message_encodes_domain_as_idna_when_domain_is_unicode(app):
    with app.app_context():
        message = build_message(LinkEmail("dana@exämple.org", "Zoë", RESUME_URL, STATUS_URL), {})
    assert message["To"] == "dana@xn--exmple-cua.org"
    assert bodies(message)[0].startswith("Hello Zoë,")


def test_build_message_raises_when_local_part_not_ascii(app):
    # Such an address needs SMTPUTF8, which this module does not speak: the page shows the link.
    with app.app_context(), pytest.raises(MailError, match="not a single plain mailbox"):
        build_message(LinkEmail("zoë@example.org", "Zoë", RESUME_URL, STATUS_URL), {})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("to", f"{ADDRESS}\r\nBcc: {EVIL}"),
        ("to", f"{ADDRESS}\nBcc: {EVIL}"),
        ("to", f"{ADDRESS}\rBcc: {EVIL}"),
        ("to", f"{ADDRESS}, {EVIL}"),
        ("to", f"Dana <{EVIL}>"),
        ("to", f"{ADDRESS}\u2028Bcc: {EVIL}"),
        ("first_name", f"Dana\r\nBcc: {EVIL}"),
        ("resume_url", f"{RESUME_URL}\r\nBcc: {EVIL}"),
        ("MAIL_SUBJECT", f"Hello\r\nBcc: {EVIL}"),
        ("MAIL_SENDER", f"no-reply@portal.example.test\r\nBcc: {EVIL}"),
        ("MAIL_SENDER", f"no-reply@portal.example.test, {EVIL}"),
    ],
)
def test_send_link_email_adds_no_recipient_or_header_when_field_is_hostile(
    mail_app, smtpd, field, value
):
    link = LinkEmail(ADDRESS, "Dana", RESUME_URL, STATUS_URL)
    config = smtp_config(smtpd.port)
    if field.isupper():
        config[field] = value
    else:
        link = dataclasses.replace(link, **{field: value})

    send_failure(mail_app(**config), link)

    # Refused before a byte was sent: no recipient, header or message reached the server.
    assert smtpd.envelopes == []


def test_send_link_email_raises_when_connection_refused(mail_app):
    error = send_failure(mail_app(**smtp_config(free_port())))
    assert isinstance(error.__cause__, ConnectionRefusedError)


def test_send_link_email_raises_within_timeout_when_server_never_answers(mail_app):
    with socket.create_server(("127.0.0.1", 0)) as silent:
        app = mail_app(**smtp_config(silent.getsockname()[1], MAIL_SMTP_TIMEOUT=0.5))
        started = time.monotonic()
        error = send_failure(app)
    assert time.monotonic() - started < 2
    assert "timed out" in str(error)


def test_send_link_email_raises_when_server_refuses_recipient(mail_app, start_smtpd):
    server = start_smtpd(Recorder(rcpt_status=f"550 5.1.1 <{ADDRESS}> unknown"))
    error = send_failure(mail_app(**smtp_config(server.port)))
    assert "550" in str(error)
    assert server.envelopes == []


def test_send_link_email_raises_when_server_closes_at_data(mail_app, start_smtpd):
    server = start_smtpd(Recorder(data_status="421 4.3.0 closing"))
    error = send_failure(mail_app(**smtp_config(server.port)))
    assert "421" in str(error)


@pytest.fixture
def hang_up_server():
    """Accept one SMTP client, agree to MAIL and RCPT, then drop the connection during DATA."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conn.settimeout(5)
        reader = conn.makefile("rb")
        try:
            conn.sendall(b"220 test ESMTP\r\n")
            for line in reader:
                if line[:4].upper() == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    reader.readline()
                    break
                conn.sendall(b"250 OK\r\n")
        finally:
            reader.close()
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(5)
    listener.close()


def test_send_link_email_raises_when_server_hangs_up_mid_message(mail_app, hang_up_server):
    error = send_failure(mail_app(**smtp_config(hang_up_server)))
    # Either the reply never comes or the body cannot be written: smtplib calls both this.
    assert isinstance(error.__cause__, smtplib.SMTPServerDisconnected)


@pytest.mark.parametrize("username", ["user", ""])
def test_send_link_email_raises_when_starttls_not_offered(mail_app, smtpd, username):
    config = smtp_config(smtpd.port, MAIL_SMTP_SECURITY="starttls", MAIL_SMTP_USERNAME=username)

    error = send_failure(mail_app(**config, MAIL_SMTP_PASSWORD="secret"))

    assert "STARTTLS" in str(error)
    assert smtpd.envelopes == []


def test_send_link_email_raises_when_ssl_server_speaks_plain(mail_app, smtpd):
    error = send_failure(mail_app(**smtp_config(smtpd.port, MAIL_SMTP_SECURITY="ssl")))
    assert "SSLError" in str(error)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAIL_BACKEND", "pigeon"),
        ("MAIL_SMTP_SECURITY", "maybe"),
        ("MAIL_SMTP_PORT", "smtp"),
    ],
)
def test_send_link_email_raises_when_setting_unusable(mail_app, smtpd, key, value):
    send_failure(mail_app(**smtp_config(smtpd.port, **{key: value})))
    assert smtpd.envelopes == []


def test_send_link_email_writes_private_eml_when_outbox(mail_app, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="portal.mail")
    outbox = tmp_path / "outbox-here"
    app = mail_app(MAIL_BACKEND="outbox", MAIL_OUTBOX_DIR=str(outbox), MAIL_SENDER=SENDER)

    name = send(app, instance_path=str(tmp_path / "unused"))

    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f-]{36}\.eml", name)
    assert os.listdir(outbox) == [name]
    assert stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert stat.S_IMODE((outbox / name).stat().st_mode) == 0o600
    message = email.message_from_bytes((outbox / name).read_bytes(), policy=email.policy.default)
    assert message["To"] == ADDRESS and message["From"] == SENDER
    text, html = bodies(message)
    assert RESUME_URL in text and STATUS_URL in html
    messages = [r.getMessage() for r in caplog.records if r.name == "portal.mail"]
    assert messages == [f"link email written to outbox file {name}"]
    assert ADDRESS not in caplog.text and "Dana" not in caplog.text


def test_send_link_email_writes_to_instance_outbox_when_dir_unset(mail_app, tmp_path):
    app = mail_app(MAIL_BACKEND="outbox", MAIL_OUTBOX_DIR="")
    name = send(app, instance_path=str(tmp_path))
    assert os.listdir(tmp_path / "outbox") == [name]


def test_send_link_email_raises_when_outbox_unwritable(mail_app, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    send_failure(mail_app(MAIL_BACKEND="outbox", MAIL_OUTBOX_DIR=str(blocker)))


def test_link_email_repr_holds_no_personal_data_or_links():
    for text in (repr(LINK), str(LINK)):
        assert ADDRESS not in text and "Dana" not in text
        assert "token" not in text
