"""Tasks run by the RQ worker."""

from functools import cache

from levqor_core.apijobs import jobs as job_core
from levqor_core.app import create_app
from levqor_core.webhooks import dispatch


@cache
def _app():
    return create_app()


def run_job(job_id: str) -> str:
    """Execute one API job; idempotent (a finished or canceled job is left alone)."""
    with _app().app.app_context():
        return job_core.execute(job_id)


def deliver_webhook(delivery_id: str) -> str | None:
    """One attempt at a webhook delivery; the next one is queued at its time."""
    with _app().app.app_context():
        return dispatch.attempt(delivery_id)
