"""The onboarding form and its submit."""

from __future__ import annotations

import logging
import re
import secrets
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import TooManyRequests
from werkzeug.wrappers import Response

from portal import store
from portal.client import (
    AuthenticateError,
    AuthenticateRejected,
    AuthenticateUnexpectedResponse,
    NewUser,
)
from portal.errors import log_csrf_refusal, render_error
from portal.extensions import limiter
from portal.forms import EmptyForm, OnboardingForm
from portal.helpers import email_resume_link, get_client, status_signer
from portal.ratelimits import created_a_user, everyone, onboarding_global_limit, onboarding_limit

logger = logging.getLogger(__name__)
bp = Blueprint("onboarding", __name__)

SUBMIT_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,64}")
UNAVAILABLE_MESSAGE = (
    "We couldn't reach the verification service just now. Your details are still here: "
    "please try again in a moment."
)
STORAGE_MESSAGE = (
    "Something went wrong on our side. Your details are still here: please try again in a moment."
)
UNEXPECTED_MESSAGE = (
    "The verification service gave an answer we didn't understand. Your details are still "
    "here: please try again in a moment."
)
RATE_LIMITED_MESSAGE = (
    "We've had too many new verifications in a short time, so we can't start yours just now. "
    "Your details are still here: please try again later."
)
FORM_REFUSED_MESSAGE = (
    "For your security we couldn't accept that form, so nothing was sent. This happens when a "
    "form has been open for hours, or when the browser blocks cookies from this site. Your "
    "details are still here: check them and press Continue again."
)
IN_FLIGHT_MESSAGE = (
    "We're still processing your first submission of this form. Please wait a moment and "
    "submit again."
)


@bp.get("/")
def index() -> str:
    """Show the form, keyed to this browser's submission until it is decided or replaced.

    The key lives in the session as well as in the form, so a form the browser re-fetches
    on Back carries the same key, and resubmitting it finds the user already created.
    """
    form = OnboardingForm(country=current_app.config["DEFAULT_COUNTRY"])
    key, started = current_submission()
    form.submit_key.data = key
    return render_template("onboarding/index.html", form=form, started=started, restart=EmptyForm())


@bp.post("/new")
def restart() -> Response:
    """Forget this browser's earlier submission, so another person can start afresh."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    session["submit_key"] = new_submit_key()
    return redirect(url_for("onboarding.index"), 303)


def current_submission() -> tuple[str, str | None]:
    """Return this browser's submit key and, if it created an undecided user, a status token."""
    key = session.get("submit_key")
    if isinstance(key, str) and SUBMIT_KEY_PATTERN.fullmatch(key):
        user_access_code = store.submission_user(key)
        record = store.get_verification(user_access_code) if user_access_code else None
        if record is None:
            return key, None
        if not record.is_terminal:
            return key, status_signer().dumps(record.user_access_code)
    key = new_submit_key()
    session["submit_key"] = key
    return key, None


@bp.post("/")
@limiter.limit(onboarding_limit, deduct_when=created_a_user)
@limiter.limit(onboarding_global_limit, key_func=everyone, deduct_when=created_a_user)
def submit() -> Response | tuple[str, int]:
    """Create the Authenticate user once per submit key, then go to the next step."""
    form = OnboardingForm()
    if not SUBMIT_KEY_PATTERN.fullmatch(form.submit_key.data or ""):
        form.submit_key.data = new_submit_key()
    if not form.validate_on_submit():
        return render_template("onboarding/index.html", form=form), 422
    try:
        return create_once(form)
    except DBAPIError:
        logger.exception("onboarding submit failed: database unavailable")
        form.form_errors.append(STORAGE_MESSAGE)
        return render_template("onboarding/index.html", form=form), 503


@bp.errorhandler(429)
def too_many(exc: TooManyRequests) -> tuple[Response | str, int]:
    """Refuse a rate-limited submit with the form still filled in, not a bare error page."""
    if request.endpoint != "onboarding.submit":
        return render_error(429)
    return submitted_form_again(RATE_LIMITED_MESSAGE, 429)


@bp.errorhandler(CSRFError)
def form_refused(exc: CSRFError) -> tuple[Response | str, int]:
    """Give a submit that failed the CSRF check back filled in, with a fresh token.

    Most often the form was open for hours and its token expired; a bare error page would
    lose what was typed. Only for a form posted from this site: another site's form would
    get its values shown on our page. The submit key that came with it is not trusted
    either (another site could choose it, then use it to follow this person's verification):
    the form gets this browser's own key.
    """
    log_csrf_refusal(exc)
    if request.endpoint != "onboarding.submit" or not from_this_site():
        return render_error(400)
    key, _ = current_submission()
    return submitted_form_again(FORM_REFUSED_MESSAGE, 400, key)


def from_this_site() -> bool:
    """Tell whether the browser says the request came from a page of PORTAL_EXTERNAL_URL.

    Browsers send Origin with every POST, and Referer unless told not to; the portal's
    Referrer-Policy (same-origin) keeps it for its own pages.
    """
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    ours = urlsplit(current_app.config["EXTERNAL_URL"])
    theirs = urlsplit(source)
    return bool(theirs.netloc) and (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc)


def submitted_form_again(message: str, code: int, key: str | None = None) -> tuple[str, int]:
    """Show the submitted form again, filled in, with `message` above it.

    It keeps the submit key that came with it, unless given another or it is malformed.
    """
    form = OnboardingForm()
    if key is not None:
        form.submit_key.data = key
    elif not SUBMIT_KEY_PATTERN.fullmatch(form.submit_key.data or ""):
        form.submit_key.data = new_submit_key()
    form.form_errors.append(message)
    return render_template("onboarding/index.html", form=form), code


def create_once(form: OnboardingForm) -> Response | tuple[str, int]:
    """Claim the form's submit key, create the user, and record its UUID."""
    key = form.submit_key.data
    if not store.claim_submission(key):
        return resubmitted(form, key)
    try:
        created = get_client().create_user(new_user(form))
    except AuthenticateError as exc:
        store.release_submission(key)
        return upstream_failed(form, exc)
    try:
        store.add_verification(created.user_access_code, key)
    except DBAPIError:
        # Authenticate has the user but we could not keep its UUID: log it for the operator.
        logger.error("created user %s but could not store it", created.user_access_code)
        raise
    logger.info("created user %s", created.user_access_code)
    return next_step(created.user_access_code, form, fresh=True)


def new_submit_key() -> str:
    """Return a one-time key that ties a form to at most one Authenticate user."""
    return secrets.token_urlsafe(32)


def new_user(form: OnboardingForm) -> NewUser:
    """Copy the validated form into the create-user request."""
    return NewUser(
        first_name=form.first_name.data,
        middle_name=form.middle_name.data or None,
        last_name=form.last_name.data,
        birth_date=form.birth_date.data,
        email=form.normalized_email or form.email.data,
        phone=form.e164_phone,
        country=form.country.data,
    )


def next_step(user_access_code: str, form: OnboardingForm, fresh: bool) -> Response:
    """Go on to Medallion, or email the link; 303, so a reload never posts again.

    A repeated submit (`fresh` False) does not send a second email: the page it lands on
    offers to send one again.
    """
    token = status_signer().dumps(user_access_code)
    if form.delivery.data != "email":
        return redirect(url_for("status.continue_verification", token=token), 303)
    values = {}
    if fresh:
        address = form.normalized_email or form.email.data
        sent = email_resume_link(user_access_code, address, form.first_name.data)
        values["sent"] = int(sent)
    return redirect(url_for("status.emailed", token=token, **values), 303)


def resubmitted(form: OnboardingForm, key: str) -> Response | tuple[str, int]:
    """Answer a repeat of an already-claimed form with the same next step."""
    budget = sum(get_client().timeout)
    user_access_code = store.wait_for_submission(key, timeout=budget)
    if user_access_code is None:
        form.form_errors.append(IN_FLIGHT_MESSAGE)
        return render_template("onboarding/index.html", form=form), 409
    logger.info("repeat submit for user %s", user_access_code)
    return next_step(user_access_code, form, fresh=False)


def upstream_failed(form: OnboardingForm, exc: AuthenticateError) -> tuple[str, int]:
    """Show the form again, filled in, with a message that says what happened."""
    if isinstance(exc, AuthenticateRejected):
        form.form_errors.append(
            f"The verification service didn't accept these details: {exc.message}"
        )
        return render_template("onboarding/index.html", form=form), 422
    unexpected = isinstance(exc, AuthenticateUnexpectedResponse)
    form.form_errors.append(UNEXPECTED_MESSAGE if unexpected else UNAVAILABLE_MESSAGE)
    return render_template("onboarding/index.html", form=form), 502 if unexpected else 503
