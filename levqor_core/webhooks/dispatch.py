"""Deliveries onto their own RQ queue (never delaying the API's jobs): the first attempt at once,
each retry at its time. The database row stays the truth: a delivery whose queued attempt Redis
lost is found again by the periodic sweep (`due`)."""

import logging
from datetime import UTC, datetime, timedelta

import redis
import sqlalchemy as sa
from flask import current_app
from rq import Queue

from levqor_core.accounts.models import Account
from levqor_core.derived_keys import secret_keys
from levqor_core.extensions import db
from levqor_core.queue import WEBHOOK_QUEUE
from levqor_core.webhooks import delivery as attempts
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

TASK = "jobs.tasks.deliver_webhook"  # by name: the core never imports the worker package
SWEEP_GRACE = timedelta(minutes=2)  # a queued attempt normally starts well within it


def queue() -> Queue:
    app = current_app
    return Queue(WEBHOOK_QUEUE, connection=app.extensions["levqor.redis"], is_async=app.config["RQ_ASYNC"])


def scheduled_time(at: datetime) -> datetime:
    """`at` rounded up to a whole second: RQ's scheduler stores a time in whole seconds rounded
    down, so a retry due at 07:36:36.33 ran at 07:36:36.20, before its delivery was due."""
    whole = at.replace(microsecond=0)
    return whole if whole == at else whole + timedelta(seconds=1)


def enqueue(delivery_ids: list[str], at: datetime | None = None) -> None:
    """Queue an attempt at each delivery (at `at`, or now); a Redis error leaves them to the sweep."""
    try:
        q = queue()
        for delivery_id in delivery_ids:
            if at is None or at <= datetime.now(UTC) or not q.is_async:
                q.enqueue(TASK, delivery_id, job_timeout=attempts.TIMEOUT_SECONDS * 3, result_ttl=0)
            else:
                q.enqueue_at(
                    scheduled_time(at), TASK, delivery_id, job_timeout=attempts.TIMEOUT_SECONDS * 3, result_ttl=0
                )
    except redis.RedisError as err:
        log.warning("could not queue webhook deliveries %s (the sweep will): %s", delivery_ids, err)


def schedule(task: str, at: datetime, *args) -> bool:
    """Run `task` (a dotted function path) on the webhook queue's workers at `at`, not before;
    False when Redis cannot take it (logged). Without an async queue (RQ_ASYNC off) nothing is
    scheduled: run at once, it would run before its time."""
    try:
        q = queue()
        if not q.is_async:
            return False
        q.enqueue_at(scheduled_time(at), task, *args, job_timeout=30, result_ttl=0)
        return True
    except redis.RedisError as err:
        log.warning("could not schedule %s%s at %s: %s", task, args, at.isoformat(), err)
        return False


def attempt(delivery_id: str, now: datetime | None = None, sender=None) -> str | None:
    """One attempt with the app's settings, the next one queued at its time; the status after it.
    `sender` (an email sender: `send(to, subject, body)`) tells an endpoint's owner when it is
    disabled."""
    config = current_app.config

    def tell_owner(endpoint: WebhookEndpoint) -> None:
        if sender is not None:
            owner = db.session.get(Account, endpoint.account_id)
            sender.send(owner.email, *disabled_notice(endpoint, config["PUBLIC_BASE_URL"]))

    status = attempts.attempt(
        delivery_id,
        secret_key=secret_keys(config),
        allow_private=config["WEBHOOK_ALLOW_PRIVATE_TARGETS"],
        now=now,
        on_disabled=tell_owner,
    )
    if status == DeliveryStatus.PENDING and queue().is_async:
        # Gone when its endpoint was deleted the moment the attempt ended: nothing to queue.
        due_at = db.session.scalar(sa.select(WebhookDelivery.next_attempt_at).where(WebhookDelivery.id == delivery_id))
        if due_at is not None:
            enqueue([delivery_id], at=due_at)
    elif status is None and queue().is_async:
        # Started a moment before it was due (a scheduler's whole seconds, a clock a little ahead):
        # at its time again, rather than minutes later by the sweep.
        due_at = attempts.early_until(delivery_id, now)
        if due_at is not None:
            log.info("webhook delivery %s: attempt started before it was due; queued again for %s", delivery_id, due_at)
            enqueue([delivery_id], at=due_at)
    return status


def disabled_notice(endpoint: WebhookEndpoint, base_url: str) -> tuple[str, str]:
    """The email to the owner of an endpoint that was just disabled: (subject, body)."""
    return (
        "Levqor disabled one of your webhook endpoints",
        f"Every delivery to {endpoint.url} has failed since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC, "
        f"so Levqor stopped sending to it ({endpoint.id}).\n\n"
        f"See the delivery log, then create the endpoint again once it answers with a 2xx: "
        f"{base_url}/developer/webhooks\n",
    )


def sweep(now: datetime | None = None) -> int:
    """Queue every delivery overdue by more than SWEEP_GRACE (those whose queued attempt was lost);
    how many."""
    now = now or datetime.now(UTC)
    due = [delivery_id for delivery_id, _ in attempts.due(now - SWEEP_GRACE)]
    enqueue(due)
    return len(due)
