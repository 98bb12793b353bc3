"""Tasks run by the RQ worker."""

from functools import cache

from levqor_core.apijobs import jobs as job_core
from levqor_core.app import create_app


@cache
def _app():
    return create_app()


def run_job(job_id: str) -> str:
    """Execute one API job; idempotent (a finished or canceled job is left alone)."""
    with _app().app.app_context():
        return job_core.execute(job_id)
