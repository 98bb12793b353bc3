"""The RQ queue that runs jobs; the core enqueues by task name so it never imports jobs/."""

import logging

import redis
from flask import current_app
from rq import Queue, Retry

log = logging.getLogger(__name__)
QUEUE_NAME = "levqor"


def get_queue() -> Queue:
    app = current_app
    return Queue(QUEUE_NAME, connection=app.extensions["levqor.redis"], is_async=app.config["RQ_ASYNC"])


def enqueue(task: str, *args, job_id: str | None = None, **kwargs) -> bool:
    """Enqueue `task` (a dotted function path); False when Redis cannot take it right now."""
    try:
        get_queue().enqueue(task, *args, job_id=job_id, retry=Retry(max=3, interval=[5, 30, 120]), **kwargs)
        return True
    except redis.RedisError as err:
        log.warning("could not enqueue %s(%s): %s", task, args, err)
        return False
