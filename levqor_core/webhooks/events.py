"""Raising an event where it happens (a job finishing, a key rolled): one call records its
deliveries and queues them.

Called after the action's own commit, and it never raises into its caller: a webhook that could
not be recorded must not fail the job or the key action that raised it (the failure is logged).
Recorded but not queued (Redis away) is fine: the periodic sweep finds pending deliveries.
Every event also goes to the account's event stream, which listening sessions (`levqor listen`)
read, whether or not an endpoint subscribes to it."""

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from flask import current_app

from levqor_core.extensions import db
from levqor_core.streams import feed
from levqor_core.webhooks import dispatch, service

log = logging.getLogger(__name__)


def emit(
    account_id: int,
    event_type: str,
    data: dict | Callable[[], dict],
    *,
    sandbox: bool = False,
    at: datetime | None = None,
) -> list[str]:
    """Record `event_type` for the account's subscribed endpoints and queue the deliveries; their
    ids ([] when none, or when recording failed). `data` may be a function, so building it (which
    may reload a just-committed row) is covered by the same guard. `at` dates an event known in
    advance (a sandbox delay job's end): its deliveries are due then, not now."""
    try:
        body = data() if callable(data) else data
        now = datetime.now(UTC)
        if at is None or at <= now:
            # An event dated later (a sandbox delay job's end) is streamed when it comes, by the
            # worker (apijobs.sandbox.stream_end), not now: it may be withdrawn until then.
            stream(account_id, event_type, body, sandbox=sandbox, at=at or now)
        delivery_ids = service.record_event(account_id, event_type, body, sandbox=sandbox, now=at or now)
        if not delivery_ids:
            return []
        db.session.commit()
    except Exception:
        log.exception("could not record the %s event for account %s", event_type, account_id)
        _rollback_quietly()
        return []
    try:
        dispatch.enqueue(delivery_ids, at=at)  # a Redis error is logged there; the sweep queues them later
    except Exception:
        log.exception("could not queue the %s deliveries %s (the sweep will)", event_type, delivery_ids)
    return delivery_ids


def stream(account_id: int, event_type: str, data: dict, *, sandbox: bool, at: datetime) -> None:
    """The event, dated `at`, its body as endpoints get it, on the account's stream (a Redis error
    is logged). Called by emit for an event of now, and for one announced earlier (its deliveries
    recorded then, due at `at`) once it has come."""
    try:
        body = service.event_body(event_type, data, sandbox, at)
        feed.publish_event(current_app.extensions["levqor.limits_redis"], account_id, sandbox, event_type, body)
    except Exception:
        log.exception("could not stream the %s event for account %s", event_type, account_id)


def withdraw(delivery_ids: list[str]) -> None:
    """Drop deliveries of an event that will not happen after all (a sandbox delay job canceled
    before its end), as long as none was attempted; never raises."""
    if not delivery_ids:
        return
    try:
        service.withdraw(delivery_ids)
    except Exception:
        log.exception("could not withdraw the webhook deliveries %s", delivery_ids)
        _rollback_quietly()


def _rollback_quietly() -> None:
    # Leave the caller a usable session; with no app context or no database, nothing to undo.
    with contextlib.suppress(Exception):
        db.session.rollback()
