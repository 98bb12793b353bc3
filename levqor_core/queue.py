"""The RQ queues; the core enqueues by task name so it never imports jobs/.

Three queues, served by separate worker processes (jobs/worker.py), so none delays another:
- API_QUEUE: the public API's jobs (one per POST /v1/jobs);
- PERIODIC_QUEUE: the scheduled maintenance jobs (quota alerts, requeue, retention, billing...);
- WEBHOOK_QUEUE: webhook delivery attempts (levqor_core.webhooks.dispatch), each up to 10 s.
"""

import logging

import redis
from flask import current_app
from rq import Queue, Retry

log = logging.getLogger(__name__)
API_QUEUE = "levqor"  # the name jobs were queued under before the split: queued jobs still run
PERIODIC_QUEUE = "levqor-periodic"
WEBHOOK_QUEUE = "levqor-webhooks"
QUEUES = (API_QUEUE, PERIODIC_QUEUE, WEBHOOK_QUEUE)
API_JOB_TIMEOUT = 90  # seconds; the longest workflow (delay) takes 30


def get_queue(name: str = API_QUEUE) -> Queue:
    app = current_app
    return Queue(name, connection=app.extensions["levqor.redis"], is_async=app.config["RQ_ASYNC"])


def enqueue(task: str, *args, job_id: str | None = None, **kwargs) -> bool:
    """Enqueue API task `task` (a dotted function path); False when Redis cannot take it right now."""
    api_queue = get_queue()
    try:
        # One round trip: RQ's own enqueue executes a pipeline for the queue's registration and
        # another for the job. Given ours, it adds both to it. Not when jobs run in process
        # (RQ_ASYNC=0): RQ would run the job before the pipeline saved it.
        with api_queue.connection.pipeline() as pipeline:
            api_queue.enqueue(
                task,
                *args,
                job_id=job_id,
                job_timeout=API_JOB_TIMEOUT,
                retry=Retry(max=3, interval=[5, 30, 120]),
                pipeline=pipeline if api_queue.is_async else None,
                **kwargs,
            )
            pipeline.execute()
        return True
    except redis.RedisError as err:
        log.warning("could not enqueue %s(%s): %s", task, args, err)
        return False
