"""Deliveries onto their own RQ queue (never delaying the API's jobs): the first attempt at once,
each retry at its time. The database row stays the truth: a delivery whose queued attempt Redis
lost is found again by the periodic sweep (`due`)."""

import logging
from datetime import UTC, datetime, timedelta

import redis
from flask import current_app
from rq import Queue

from levqor_core.extensions import db
from levqor_core.queue import WEBHOOK_QUEUE
from levqor_core.webhooks import delivery as attempts
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery

log = logging.getLogger(__name__)

TASK = "jobs.tasks.deliver_webhook"  # by name: the core never imports the worker package
SWEEP_GRACE = timedelta(minutes=2)  # a queued attempt normally starts well within it


def queue() -> Queue:
    app = current_app
    return Queue(WEBHOOK_QUEUE, connection=app.extensions["levqor.redis"], is_async=app.config["RQ_ASYNC"])


def enqueue(delivery_ids: list[str], at: datetime | None = None) -> None:
    """Queue an attempt at each delivery (at `at`, or now); a Redis error leaves them to the sweep."""
    try:
        q = queue()
        for delivery_id in delivery_ids:
            if at is None or at <= datetime.now(UTC) or not q.is_async:
                q.enqueue(TASK, delivery_id, job_timeout=attempts.TIMEOUT_SECONDS * 3, result_ttl=0)
            else:
                q.enqueue_at(at, TASK, delivery_id, job_timeout=attempts.TIMEOUT_SECONDS * 3, result_ttl=0)
    except redis.RedisError as err:
        log.warning("could not queue webhook deliveries %s (the sweep will): %s", delivery_ids, err)


def attempt(delivery_id: str, now: datetime | None = None) -> str | None:
    """One attempt with the app's settings, the next one queued at its time; the status after it."""
    config = current_app.config
    status = attempts.attempt(
        delivery_id,
        secret_key=config["SECRET_KEY"],
        allow_private=config["WEBHOOK_ALLOW_PRIVATE_TARGETS"],
        now=now,
    )
    if status == DeliveryStatus.PENDING and queue().is_async:
        enqueue([delivery_id], at=db.session.get(WebhookDelivery, delivery_id).next_attempt_at)
    return status


def sweep(now: datetime | None = None) -> int:
    """Queue every delivery overdue by more than SWEEP_GRACE (those whose queued attempt was lost);
    how many."""
    now = now or datetime.now(UTC)
    due = [delivery_id for delivery_id, _ in attempts.due(now - SWEEP_GRACE)]
    enqueue(due)
    return len(due)
