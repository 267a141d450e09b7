"""The stand-in for the hosted Medallion page: the tester picks the verification outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from .config import to_bool
from .delivery import get_deliverer, make_envelope
from .state import Token, get_state

bp = Blueprint("medallion", __name__)


@dataclass(frozen=True)
class Outcome:
    """A button on the page: its label, the STATUS_* setting it sends, and if it finishes."""

    label: str
    setting: str
    completes: bool


# Only verified and failed finish a verification; review and abandoned leave the user free
# to get a new link, since /user/jwt refuses only users who completed.
OUTCOMES: dict[str, Outcome] = {
    "verified": Outcome("Verified", "STATUS_VERIFIED", True),
    "failed": Outcome("Failed", "STATUS_FAILED", True),
    "review": Outcome("Needs review", "STATUS_REVIEW", False),
    "abandoned": Outcome("Abandoned", "STATUS_ABANDONED", False),
}


@dataclass(frozen=True)
class Flags:
    """Per-link delivery quirks, from the page URL or the app-wide settings."""

    duplicates: bool
    reorder: bool

    @property
    def copies(self) -> int:
        """Return how many times each event is delivered."""
        return 2 if self.duplicates else 1


class LinkProblem(Exception):
    """A link that cannot be used, shown to the tester as an HTML page with status."""

    def __init__(self, status: int, heading: str, detail: str) -> None:
        super().__init__(heading)
        self.status = status
        self.heading = heading
        self.detail = detail


@bp.errorhandler(LinkProblem)
def _link_problem(exc: LinkProblem) -> tuple[str, int]:
    """Render an unusable-link page instead of an error trace."""
    return render_problem(exc.status, exc.heading, exc.detail)


def render_problem(status: int, heading: str, detail: str) -> tuple[str, int]:
    """Render the sandbox's HTML error page with the given status."""
    html = render_template("problem.html", status=status, heading=heading, detail=detail)
    return html, status


@bp.after_request
def _harden(response: Response) -> Response:
    """Keep the token out of caches and Referer headers, and allow only our own assets."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'self'"
    return response


def _usable_token(value: str) -> Token:
    """Return the token for value (short form or jwt), or raise LinkProblem."""
    if not value:
        raise LinkProblem(404, "No verification link", "Open the link from your invitation.")
    token = get_state().find_token(value)
    if token is None:
        raise LinkProblem(404, "Link not found", "This verification link is not valid.")
    if token.expired():
        raise LinkProblem(410, "Link expired", "Ask for a new verification link.")
    user = get_state().get_user(token.user_access_code)
    if user is None or user.completed:
        raise LinkProblem(410, "Already completed", "This verification is already finished.")
    return token


def _flags(source: Mapping[str, str]) -> Flags:
    """Read duplicates/reorder from query or form values, defaulting to the settings."""
    config = current_app.config

    def read(name: str, default: bool) -> bool:
        try:
            return to_bool(source[name]) or default
        except (KeyError, ValueError):
            return default

    return Flags(
        duplicates=read("duplicates", config["WEBHOOK_DUPLICATES"]),
        reorder=read("reorder", config["WEBHOOK_REORDER"]),
    )


def _announce_start(token: Token, flags: Flags) -> None:
    """Queue the "started" event on the first view, or hold it back when reordering."""
    status = current_app.config["STATUS_STARTED"]
    if not status:
        return
    method = current_app.config["VERIFICATION_METHOD"]

    def make(when: datetime) -> dict[str, Any]:
        return make_envelope(token.user_access_code, status, method, when)

    envelope = get_state().begin(token, make, hold=flags.reorder)
    if envelope is not None:
        get_deliverer().enqueue(envelope, flags.copies)


@bp.get("/")
def page() -> str:
    """Show the outcome buttons for the link in ?token= (short token or jwt)."""
    token = _usable_token(request.args.get("token", ""))
    flags = _flags(request.args)
    _announce_start(token, flags)
    choices = [
        (key, outcome.label, current_app.config[outcome.setting])
        for key, outcome in OUTCOMES.items()
    ]
    return render_template("medallion.html", token=token.token, choices=choices, flags=flags)


@bp.post("/medallion/complete")
def complete() -> BaseResponse | str:
    """Send the chosen outcome's webhook, then return the browser to the portal."""
    # No CSRF token: the unguessable Medallion token in the form is the capability, so a
    # cross-site page cannot forge a post for a link it does not already hold.
    token = _usable_token(request.form.get("token", ""))
    outcome = OUTCOMES.get(request.form.get("outcome", ""))
    if outcome is None:
        raise LinkProblem(400, "Unknown choice", "Pick one of the outcome buttons.")
    flags = _flags(request.form)
    status = current_app.config[outcome.setting]
    when = datetime.now(UTC)
    if token.started_at is not None:
        # Same-millisecond clicks happen in tests; the outcome must still sort after "started".
        when = max(when, token.started_at + timedelta(milliseconds=1))
    envelope = make_envelope(
        token.user_access_code, status, current_app.config["VERIFICATION_METHOD"], when
    )
    held_started = get_state().record_outcome(token, status, outcome.completes)
    deliverer = get_deliverer()
    deliverer.enqueue(envelope, flags.copies)
    if held_started is not None:
        deliverer.enqueue(held_started, flags.copies)
    if token.redirect_url:
        return redirect(token.redirect_url, 303)
    return render_template("done.html")


@bp.get("/favicon.ico")
def favicon() -> tuple[str, int]:
    """Answer the browser's icon request with nothing, so its console shows no 404."""
    return "", 204


@bp.get("/medallion.css")
def stylesheet() -> Response:
    """Serve the page's small stylesheet (kept as a template so it ships as package data)."""
    return Response(render_template("medallion.css"), mimetype="text/css")
