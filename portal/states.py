"""Plain-words descriptions of the portal states, for the status page and its poll."""

from __future__ import annotations

from dataclasses import dataclass

from portal.models import (
    CONTINUABLE_STATES,
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    NEEDS_REVIEW,
    PENDING,
    TERMINAL_STATES,
    VERIFIED,
)


@dataclass(frozen=True)
class StateText:
    title: str
    detail: str
    terminal: bool
    # Whether the person can (and should) go back to Medallion: not while under review.
    can_continue: bool


STEPS = ("Details submitted", "Verification started", "Under review", "Decision")


def timeline(state: str, reviewed: bool) -> list[str]:
    """Return each step's look: done, current, todo, skipped or failed.

    `reviewed` says whether the record passed through review; a decision reached without
    one shows that step as skipped rather than done.
    """
    if state in CONTINUABLE_STATES:
        return ["done", "current", "todo", "todo"]
    if state not in TERMINAL_STATES:
        return ["done", "done", "current", "todo"]
    return [
        "done",
        "done",
        "done" if reviewed else "skipped",
        "failed" if state == FAILED else "done",
    ]


TEXTS = {
    PENDING: (
        "Waiting for you to start verification",
        "Continue to the verification page to check your identity.",
    ),
    IN_PROGRESS: ("Verification in progress", "You can close this page; we'll keep checking."),
    NEEDS_REVIEW: (
        "Under review",
        "Your verification is being reviewed. You can close this page; we'll keep checking.",
    ),
    EXPIRED: (
        "Verification not finished",
        "Your verification session ended before it was complete. "
        "You can continue where you left off.",
    ),
    VERIFIED: ("Verified", "Your identity has been verified. You can close this page."),
    FAILED: (
        "Verification failed",
        "We couldn't verify your identity. Please contact {contact} for help.",
    ),
}


# Pending, but a Medallion link went out: most likely the person just came back from it and
# the result is on its way, so don't tell them to start.
AWAITING_RESULT = (
    "Waiting for the result",
    "If you've finished on the verification page, your result will appear here shortly. "
    "If you didn't finish, you can continue.",
)


def describe(state: str, contact: str, link_issued: bool = False) -> StateText:
    """Return the title and next-step text for a portal state; `contact` is who helps."""
    title, detail = TEXTS.get(state, TEXTS[NEEDS_REVIEW])
    if state == PENDING and link_issued:
        title, detail = AWAITING_RESULT
    return StateText(
        title=title,
        detail=detail.format(contact=contact),
        terminal=state in TERMINAL_STATES,
        can_continue=state in CONTINUABLE_STATES,
    )
