"""Build and send the email with the resume and status links; nothing about it is kept."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from flask import render_template

logger = logging.getLogger(__name__)

DEFAULT_SENDER = "Identity verification <no-reply@localhost>"
DEFAULT_SUBJECT = "Continue your identity verification"
DEFAULT_RESUME_LINK_MAX_AGE = 7 * 86400
SECURITY_MODES = frozenset({"starttls", "ssl", "none"})
# Characters that end a line somewhere: in a header any of them could start a new header.
LINE_BREAK_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


@dataclass(frozen=True, repr=False)
class LinkEmail:
    """One link email. The address is used for this send only: never stored or logged."""

    to: str
    first_name: str
    resume_url: str
    status_url: str

    def __repr__(self) -> str:
        # Reprs reach logs and tracebacks. The links are left out too: each carries a token.
        return "LinkEmail(to=<redacted>, first_name=<redacted>, resume_url=<redacted>, ...)"


class MailError(Exception):
    """Sending failed. The message names the cause, never the recipient's address."""


@dataclass(frozen=True)
class _SmtpSettings:
    """The relay to send through, read from MAIL_SMTP_* settings."""

    host: str
    port: int
    security: str
    username: str
    password: str = field(repr=False)
    timeout: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> _SmtpSettings:
        """Read the settings, applying defaults; raise MailError if one is unusable."""
        try:
            settings = cls(
                host=str(config.get("MAIL_SMTP_HOST", "localhost")),
                port=int(config.get("MAIL_SMTP_PORT", 587)),
                security=str(config.get("MAIL_SMTP_SECURITY", "starttls")).lower(),
                username=str(config.get("MAIL_SMTP_USERNAME") or ""),
                password=str(config.get("MAIL_SMTP_PASSWORD") or ""),
                timeout=float(config.get("MAIL_SMTP_TIMEOUT", 10)),
            )
        except (TypeError, ValueError) as exc:
            raise MailError("MAIL_SMTP_PORT and MAIL_SMTP_TIMEOUT must be numbers") from exc
        if settings.security not in SECURITY_MODES:
            raise MailError("MAIL_SMTP_SECURITY must be one of starttls, ssl or none")
        return settings


def build_message(email: LinkEmail, config: Mapping[str, Any]) -> EmailMessage:
    """Return the multipart/alternative message; call within an app context (templates).

    :raises MailError: a field holds a line break or the address is not a single mailbox.
    """
    for name in ("to", "first_name", "resume_url", "status_url"):
        _refuse_line_breaks(name, getattr(email, name))
    subject = str(config.get("MAIL_SUBJECT", DEFAULT_SUBJECT))
    _refuse_line_breaks("MAIL_SUBJECT", subject)
    sender = _sender_address(str(config.get("MAIL_SENDER", DEFAULT_SENDER)))

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = _recipient_address(email.to)
    msg["Subject"] = subject
    msg["Date"] = datetime.now(UTC)
    # An explicit domain: without one, make_msgid asks DNS for this host's name.
    msg["Message-ID"] = make_msgid(domain=sender.domain)

    max_age = int(config.get("RESUME_LINK_MAX_AGE", DEFAULT_RESUME_LINK_MAX_AGE))
    context = {
        "first_name": email.first_name,
        "resume_url": email.resume_url,
        "status_url": email.status_url,
        "resume_days": max_age // 86400,
        "site_name": config.get("SITE_NAME", "Identity verification"),
        "subject": subject,
    }
    msg.set_content(render_template("mail/link.txt", **context))
    msg.add_alternative(render_template("mail/link.html", **context), subtype="html")
    return msg


def _refuse_line_breaks(name: str, value: str) -> None:
    """Raise MailError naming the field (not its value) if it holds a control character."""
    if any(unicodedata.category(char) in LINE_BREAK_CATEGORIES for char in value):
        raise MailError(f"{name} holds a line break or control character")


def _sender_address(value: str) -> Address:
    """Parse MAIL_SENDER into exactly one address with a domain."""
    _refuse_line_breaks("MAIL_SENDER", value)
    probe = EmailMessage()
    try:
        probe["From"] = value
        addresses = probe["From"].addresses
    except (IndexError, ValueError) as exc:
        raise MailError("MAIL_SENDER is not a valid address") from exc
    if len(addresses) != 1 or not addresses[0].username or not addresses[0].domain:
        raise MailError("MAIL_SENDER must hold exactly one address, such as Name <a@b.example>")
    return addresses[0]


def _recipient_address(to: str) -> Address:
    """Parse `to` as one mailbox, its domain in ASCII (IDNA); raise MailError otherwise.

    A non-ASCII local part is refused: it needs SMTPUTF8, which this module does not use.
    """
    local, _, domain = to.rpartition("@")
    try:
        # The form keeps internationalised domains in Unicode; headers and SMTP want ASCII.
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
        address = Address(addr_spec=f"{local}@{ascii_domain}")
    except (UnicodeError, ValueError):
        # The library's messages quote the address: keep it out of the error and its chain.
        raise MailError("the recipient address is not a single plain mailbox") from None
    if not address.username or not address.domain:
        raise MailError("the recipient address is not a single plain mailbox")
    return address


def send_link_email(email: LinkEmail, config: Mapping[str, Any], instance_path: str) -> str:
    """Build and send `email` with MAIL_BACKEND; return the outbox file name or the Message-ID.

    :raises MailError: building, writing or sending failed; the address is in no message.
    """
    msg = build_message(email, config)
    backend = config.get("MAIL_BACKEND", "outbox")
    if backend == "outbox":
        name = _write_outbox(msg, config, instance_path)
        logger.info("link email written to outbox file %s", name)
        return name
    if backend == "smtp":
        _send_smtp(msg, _SmtpSettings.from_config(config))
        message_id = str(msg["Message-ID"])
        logger.info("link email sent by SMTP as %s", message_id)
        return message_id
    raise MailError("MAIL_BACKEND must be outbox or smtp")


def _write_outbox(msg: EmailMessage, config: Mapping[str, Any], instance_path: str) -> str:
    """Write `msg` as a new .eml file in the outbox folder; return the file's name."""
    folder = config.get("MAIL_OUTBOX_DIR") or os.path.join(instance_path, "outbox")
    name = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4()}.eml"
    data = msg.as_bytes()
    try:
        # Owner-only: each file holds an address and a live resume link.
        os.makedirs(folder, mode=0o700, exist_ok=True)
        # O_EXCL: never write through a file or link that is already there.
        fd = os.open(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except OSError as exc:
        raise MailError(f"could not write to the outbox: {_describe(exc)}") from exc
    return name


def _send_smtp(msg: EmailMessage, settings: _SmtpSettings) -> None:
    """Deliver `msg` through the relay; the timeout bounds the connect and every reply."""
    sender = msg["From"].addresses[0].addr_spec
    recipient = msg["To"].addresses[0].addr_spec
    try:
        smtp = _connect(settings)
        try:
            _secure_and_login(smtp, settings)
            # The envelope is given, not derived from headers: exactly one recipient.
            smtp.send_message(msg, from_addr=sender, to_addrs=[recipient])
        finally:
            _close_quietly(smtp)
    except (smtplib.SMTPException, OSError) as exc:
        # The cause stays chained for debugging; server replies may echo the address, so
        # log this error's text, not its traceback.
        raise MailError(f"SMTP delivery failed: {_describe(exc)}") from exc


def _connect(settings: _SmtpSettings) -> smtplib.SMTP:
    """Open the connection, in TLS from the first byte when security is "ssl"."""
    if settings.security == "ssl":
        context = ssl.create_default_context()
        return smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=context
        )
    return smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)


def _secure_and_login(smtp: smtplib.SMTP, settings: _SmtpSettings) -> None:
    """Upgrade to TLS when security is "starttls", then log in if a username is set."""
    if settings.security == "starttls":
        smtp.ehlo()
        if not smtp.has_extn("starttls"):
            # Fail closed, with or without credentials: the message carries the address and
            # a live resume link, which must not cross the network in clear text.
            raise MailError("the SMTP server does not offer STARTTLS")
        smtp.starttls(context=ssl.create_default_context())
    if settings.username:
        smtp.login(settings.username, settings.password)


def _close_quietly(smtp: smtplib.SMTP) -> None:
    """Say QUIT, or just close: the send has succeeded or failed by now either way."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _describe(exc: BaseException) -> str:
    """Name a failure by type, SMTP code and local reason; never quote what the server said."""
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused) and exc.recipients:
        code = next(iter(exc.recipients.values()))[0]
    reason = exc.strerror if isinstance(exc, OSError) else None
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        reason = str(exc)  # written by smtplib itself, as "Connection unexpectedly closed: ..."
    return " ".join(str(part) for part in (type(exc).__name__, code, reason) if part)
