"""Emailed resume links: each use fetches a fresh Medallion link (links expire)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, redirect, render_template, url_for

from portal import store
from portal.client import AuthenticateError, AuthenticateRejected
from portal.extensions import limiter
from portal.forms import ResendForm
from portal.helpers import (
    email_resume_link,
    get_client,
    no_store,
    resume_signer,
    status_signer,
    status_url,
)
from portal.models import Verification
from portal.ratelimits import resend_key, resend_limit, sent_an_email
from portal.tokens import TokenExpired, TokenInvalid
from portal.views.status import link_refused

logger = logging.getLogger(__name__)
bp = Blueprint("resume", __name__, url_prefix="/resume")
# Every page here is reached through a signed link and shows that person's state or link:
# none of it may be kept by a browser or shared cache, error pages included.
bp.after_request(no_store)


def load(token: str) -> tuple[Verification | None, bool]:
    """Return (record, expired) for a resume token; record is None when nothing is usable.

    An expired but genuine token still names its record, so the person can ask for a new
    email; that grace lasts as long as a status link does.
    """
    config = current_app.config
    try:
        user_access_code = resume_signer().loads(token, max_age=int(config["RESUME_LINK_MAX_AGE"]))
        expired = False
    except TokenExpired:
        try:
            user_access_code = resume_signer().loads(
                token, max_age=int(config["STATUS_LINK_MAX_AGE"])
            )
        except TokenInvalid:
            return None, True
        expired = True
    except TokenInvalid:
        return None, False
    return store.get_verification(user_access_code), expired


@bp.get("/<token>")
def open_link(token: str) -> Response | tuple[str, int]:
    """Send the person on to Medallion with a fresh link, or to their status page.

    The status page once there is nothing left to do on Medallion: under review or decided
    (see status.continue_verification).
    """
    record, expired = load(token)
    if record is None or expired:
        return problem(token, record, expired)
    status = status_url(record.user_access_code)
    if not record.can_continue:
        return redirect(status, 303)
    try:
        link = get_client().create_link(record.user_access_code, status)
    except AuthenticateRejected as exc:
        if "already completed" in exc.message.lower():
            return redirect(status, 303)
        logger.warning(
            "resume link refused for user %s: %d", record.user_access_code, exc.status_code
        )
        return link_refused()
    except AuthenticateError:
        logger.warning("resume link unavailable for user %s", record.user_access_code)
        return link_failed(record)
    store.mark_link_issued(record.user_access_code, link.token)
    return no_store(redirect(link.url, 303))


@bp.post("/<token>/email")
@limiter.limit(resend_limit, key_func=resend_key, deduct_when=sent_an_email)
@limiter.limit(resend_limit, deduct_when=sent_an_email)
def email_link(token: str) -> Response | tuple[str, int]:
    """Email a new resume link from an expired one; the same answer whoever owns the address."""
    record, expired = load(token)
    if record is None:
        return problem(token, None, expired)
    form = ResendForm()
    if not form.validate_on_submit():
        return render_template(
            "resume/problem.html", token=token, form=form, expired=True, known=True
        ), 422
    sent = email_resume_link(record.user_access_code, form.email.data)
    status_token = status_signer().dumps(record.user_access_code)
    return redirect(url_for("status.emailed", token=status_token, sent=2 if sent else 0), 303)


def problem(token: str, record: Verification | None, expired: bool) -> tuple[str, int]:
    """Explain an expired (410) or unusable (404) resume link, and how to go on."""
    html = render_template(
        "resume/problem.html",
        token=token,
        form=ResendForm(),
        expired=expired,
        known=record is not None,
    )
    return html, 410 if expired else 404


def link_failed(record: Verification) -> tuple[str, int]:
    """The user exists, so they only need to try again in a moment."""
    token = status_signer().dumps(record.user_access_code)
    return render_template("status/link_failed.html", token=token), 503
