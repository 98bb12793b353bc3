"""The worker's RQ tasks: plain functions taking ids (an API job's id, a periodic job's name),
enqueued only through the core (`levqor_core.queue`, `levqor_core.ops.periodic`)."""

import contextlib
import functools
from functools import cache

import sqlalchemy as sa
from rq import get_current_job

from jobs import stopping
from levqor_core import outbound_mail, redis_conn
from levqor_core.apijobs import jobs as job_core
from levqor_core.apijobs import sandbox
from levqor_core.app import create_app
from levqor_core.extensions import db
from levqor_core.ops import periodic
from levqor_core.webhooks import dispatch


@cache
def _app():
    return create_app()


def warm() -> None:
    """Do once in the supervisor what every forked process would otherwise do on its first job: set
    up the ORM's mappers and run the database dialect's first-connect checks (~30 ms a process). The
    connection is closed again: it must not cross a fork."""
    app = _app().app
    with app.app_context():
        sa.orm.configure_mappers()
        with db.engine.connect():
            pass
        db.engine.dispose()


def run_job(job_id: str, account_id: int | None = None) -> str:
    """Execute one API job; idempotent (a finished or canceled job is left alone). A cancel stops
    its workflow on the API queue's workers, which run it in their own process (jobs/stopping.py).
    `account_id`: the job's, for its poll's answers in Redis (absent from calls queued before)."""
    rq_job = get_current_job()
    guard = functools.partial(stopping.stoppable, rq_job.id) if rq_job else contextlib.nullcontext
    with _app().app.app_context():
        return job_core.execute(job_id, account_id, guard=guard)


def deliver_webhook(delivery_id: str) -> str | None:
    """One attempt at a webhook delivery; the next one is queued at its time."""
    with _app().app.app_context():
        return dispatch.attempt(delivery_id, sender=outbound_mail.email_sender())


def stream_sandbox_job_end(account_id: int, job_id: str) -> bool:
    """At a sandbox delay job's end: its job.succeeded on the account's event stream."""
    with _app().app.app_context():
        return sandbox.stream_end(redis_conn.for_limits(), account_id, job_id)


def run_periodic(name: str, **kwargs) -> dict:
    """Run periodic job `name` (levqor_core.ops.periodic.PERIODIC_JOBS), its progress in job.meta."""
    app = _app().app
    with app.app_context():
        job = get_current_job()
        if job is None:
            return periodic.run(name, **kwargs)
        app.extensions["levqor.redis"].set(periodic.last_job_key(name), job.id, ex=periodic.LAST_JOB_TTL)

        def progress(done: int, total: int, counts: dict) -> None:
            # Read by the portal's self-polling status fragment.
            job.meta["progress"] = {"done": done, "total": total} | counts
            job.save_meta()

        result = periodic.run(name, progress=progress, **kwargs)
        job.meta["progress"] = {**job.meta.get("progress", {}), **result, "phase": "finished"}
        job.save_meta()
        return result
