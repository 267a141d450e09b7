"""The signed-link status page, its JSON poll, and the way on to Medallion."""

from __future__ import annotations

import hashlib
import logging

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from portal import store
from portal.client import AuthenticateError, AuthenticateRejected
from portal.config import status_map
from portal.extensions import limiter
from portal.forms import EmptyForm, ResendForm
from portal.helpers import (
    email_resume_link,
    get_client,
    load_status_token,
    no_store,
    qr_svg,
    resume_url,
    status_url,
)
from portal.models import Verification
from portal.ratelimits import resend_key, resend_limit, sent_an_email
from portal.states import STEPS, describe, timeline
from portal.tokens import TokenExpired, TokenInvalid

logger = logging.getLogger(__name__)
bp = Blueprint("status", __name__, url_prefix="/status")
# Every page here is reached through a signed link and shows that person's state or link:
# none of it may be kept by a browser or shared cache, error pages included.
bp.after_request(no_store)


def record_for(token: str) -> Verification:
    """Return the record a status token points at, or stop with the right error page."""
    record = store.get_verification(uuid_for(token))
    if record is None:
        abort(link_problem(expired=False))
    return record


def uuid_for(token: str) -> str:
    """Return the UUID in a status token, or stop with the expired or broken-link page."""
    try:
        return load_status_token(token)
    except TokenExpired:
        abort(link_problem(expired=True))
    except TokenInvalid:
        abort(link_problem(expired=False))


def link_problem(expired: bool) -> Response:
    """Explain an expired (410) or broken (404) status link, in its own page or JSON."""
    code = 410 if expired else 404
    if request.path.endswith(".json"):
        response = jsonify(error="expired" if expired else "not found")
    else:
        response = Response(render_template("status/link_problem.html", expired=expired))
    response.status_code = code
    return no_store(response)


@bp.get("/<token>")
def page(token: str) -> Response:
    """Show the current state in plain words; it refreshes itself until decided."""
    record = record_for(token)
    html = render_template(
        "status/page.html",
        record=record,
        state=describe(
            record.state,
            current_app.config["SUPPORT_CONTACT"],
            record.link_issued_at is not None,
        ),
        steps=zip(STEPS, steps_for(record), strict=True),
        token=token,
        poll_seconds=current_app.config["STATUS_POLL_SECONDS"],
    )
    return no_store(Response(html))


def steps_for(record: Verification | store.StatusSnapshot) -> list[str]:
    """Return the timeline for a record; only a decided one needs its history read."""
    reviewed = record.is_terminal and store.was_reviewed(
        record.user_access_code, status_map(current_app.config)
    )
    return timeline(record.state, reviewed)


@bp.get("/<token>.json")
def poll(token: str) -> Response:
    """Answer the page's poll; 304 when nothing changed since the ETag the script sent."""
    record = store.get_status(uuid_for(token))
    if record is None:
        abort(link_problem(expired=False))
    state = describe(
        record.state,
        current_app.config["SUPPORT_CONTACT"],
        record.link_issued_at is not None,
    )
    etag = hashlib.sha256(
        f"{record.state}|{record.updated_at}|{record.link_issued_at}".encode()
    ).hexdigest()[:32]
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = jsonify(
            state=record.state,
            title=state.title,
            detail=state.detail,
            terminal=state.terminal,
            can_continue=state.can_continue,
            timeline=steps_for(record),
        )
    response.set_etag(etag)
    return no_store(response)


@bp.get("/<token>/continue")
def continue_verification(token: str) -> Response | tuple[str, int]:
    """Get a fresh Medallion link (links expire) and send the browser on to it.

    Only while the person still has something to do there: under review or decided, a new
    link would start the verification over, so they see the status page instead.
    """
    record = record_for(token)
    if not record.can_continue:
        return redirect(status_url(record.user_access_code), 303)
    try:
        link = get_client().create_link(
            record.user_access_code, status_url(record.user_access_code)
        )
    except AuthenticateRejected as exc:
        if "already completed" in exc.message.lower():
            return redirect(status_url(record.user_access_code), 303)
        logger.warning("link refused for user %s: %d", record.user_access_code, exc.status_code)
        return link_refused()
    except AuthenticateError:
        logger.warning("link unavailable for user %s", record.user_access_code)
        return link_failed(token)
    store.mark_link_issued(record.user_access_code, link.token)
    html = render_template(
        "status/continue.html",
        link_url=link.url,
        token=token,
        qr=qr_svg(resume_url(record.user_access_code), "QR code to continue on your phone"),
    )
    return no_store(Response(html))


@bp.get("/<token>/emailed")
def emailed(token: str) -> Response:
    """Say the link was emailed (or why not), show it as a QR code, offer to send again."""
    record = record_for(token)
    return no_store(Response(resend_page(record, token, ResendForm(), request.args.get("sent"))))


@bp.post("/<token>/email")
@limiter.limit(resend_limit, key_func=resend_key, deduct_when=sent_an_email)
@limiter.limit(resend_limit, deduct_when=sent_an_email)
def email_link(token: str) -> Response | tuple[Response, int]:
    """Email a fresh resume link to the address typed; the same answer whoever owns it.

    Not once there is nothing left to do on Medallion (a tab left open from before): the
    emailed page then says so instead.
    """
    record = record_for(token)
    if not record.can_continue:
        return redirect(url_for("status.emailed", token=token), 303)
    form = ResendForm()
    if not form.validate_on_submit():
        return no_store(Response(resend_page(record, token, form, None))), 422
    sent = email_resume_link(record.user_access_code, form.email.data)
    return redirect(url_for("status.emailed", token=token, sent=2 if sent else 0), 303)


def resend_page(record: Verification, token: str, form: ResendForm, sent: str | None) -> str:
    """Render the page that shows the resume link and the send-again form."""
    link = resume_url(record.user_access_code)
    return render_template(
        "status/emailed.html",
        token=token,
        form=form,
        sent=sent,
        resume_link=link,
        qr=qr_svg(link, "QR code of your verification link"),
        terminal=record.is_terminal,
        continuable=record.can_continue,
    )


def link_failed(token: str) -> tuple[str, int]:
    """Say the link could not be fetched; the user is created, so a retry is all it takes."""
    return render_template("status/link_failed.html", token=token), 503


def link_refused() -> tuple[str, int]:
    """Authenticate answered, but will not continue this verification: retrying won't help."""
    return render_template("status/link_refused.html", restart=EmptyForm()), 502
