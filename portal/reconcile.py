"""Recover missed webhooks by asking Authenticate about records that stopped moving."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from portal import store
from portal.client import AuthenticateClient, AuthenticateError, AuthenticateRejected
from portal.config import status_map
from portal.models import Verification, utcnow

logger = logging.getLogger(__name__)


def reconcile(
    client: AuthenticateClient, config: Mapping[str, Any], older_than: float | None = None
) -> Counter[str]:
    """Re-check every undecided record idle for `older_than` seconds; count the outcomes."""
    age = float(config["RECONCILE_AFTER"] if older_than is None else older_than)
    cutoff = utcnow() - timedelta(seconds=age)
    outcomes: Counter[str] = Counter()
    for record in store.list_undecided(updated_before=cutoff):
        outcome = recheck(client, record, status_map(config), utcnow())
        logger.info("reconciled user %s: %s", record.user_access_code, outcome)
        outcomes[outcome] += 1
    return outcomes


def recheck(
    client: AuthenticateClient, record: Verification, table: Mapping[str, str], now: datetime
) -> str:
    """Ask Authenticate for one record's status and feed it through the state machine.

    The answer becomes an event whose id is derived from the status, so re-running finds a
    duplicate instead of piling up rows, and it goes through the same fold as webhooks: a
    decision is never downgraded by it.
    """
    if not record.medallion_token:
        return "no-link"
    try:
        status = client.get_link_status(record.medallion_token)
    except AuthenticateRejected as exc:
        # Authenticate answered but does not know the token (expired, or another account).
        logger.warning("re-check of user %s refused: %d", record.user_access_code, exc.status_code)
        return "rejected"
    except AuthenticateError as exc:
        logger.warning("re-check of user %s failed: %s", record.user_access_code, exc)
        return "unavailable"
    if status.status is None:
        return "no-status"
    event = store.IncomingEvent(
        event_id=f"reconciled:{record.medallion_token}:{status.status}"[:100],
        event_type=store.RECONCILED_EVENT,
        user_access_code=record.user_access_code,
        raw_status=status.status,
        verification_method=status.verification_method,
        event_date=now,
    )
    return store.record_event(event, table)
