"""Raising an event where it happens (a job finishing, a key rolled): one call records its
deliveries and queues them.

Called after the action's own commit, and it never raises into its caller: a webhook that could
not be recorded must not fail the job or the key action that raised it (the failure is logged).
Recorded but not queued (Redis away) is fine: the periodic sweep finds pending deliveries."""

import contextlib
import logging
from collections.abc import Callable

from levqor_core.extensions import db
from levqor_core.webhooks import dispatch, service

log = logging.getLogger(__name__)


def emit(account_id: int, event_type: str, data: dict | Callable[[], dict], *, sandbox: bool = False) -> list[str]:
    """Record `event_type` for the account's subscribed endpoints and queue the deliveries; their
    ids ([] when none, or when recording failed). `data` may be a function, so building it (which
    may reload a just-committed row) is covered by the same guard."""
    try:
        body = data() if callable(data) else data
        delivery_ids = service.record_event(account_id, event_type, body, sandbox=sandbox)
        if not delivery_ids:
            return []
        db.session.commit()
    except Exception:
        log.exception("could not record the %s event for account %s", event_type, account_id)
        # Leave the caller a usable session; with no app context or no database, nothing to undo.
        with contextlib.suppress(Exception):
            db.session.rollback()
        return []
    try:
        dispatch.enqueue(delivery_ids)  # a Redis error is logged there; the sweep queues them later
    except Exception:
        log.exception("could not queue the %s deliveries %s (the sweep will)", event_type, delivery_ids)
    return delivery_ids
