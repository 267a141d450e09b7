"""Plain-words descriptions of the portal states, for the status page and its poll."""

from __future__ import annotations

from dataclasses import dataclass

from portal.models import (
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
    # Index into STEPS of the step the person is at.
    step: int


STEPS = ("Details submitted", "Verification started", "Under review", "Decision")
STEP_OF = {PENDING: 1, IN_PROGRESS: 1, EXPIRED: 1, NEEDS_REVIEW: 2, VERIFIED: 3, FAILED: 3}


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


def describe(state: str, contact: str) -> StateText:
    """Return the title and next-step text for a portal state; `contact` is who helps."""
    title, detail = TEXTS.get(state, TEXTS[NEEDS_REVIEW])
    return StateText(
        title=title,
        detail=detail.format(contact=contact),
        terminal=state in TERMINAL_STATES,
        step=STEP_OF.get(state, STEP_OF[NEEDS_REVIEW]),
    )
