"""/v1/jobs"""

from flask import Response, current_app, request

from levqor_core.apijobs import jobs

from . import _caller
from ._reply import Reply, ok


def create_job(*, body: dict) -> Reply:
    """Queue a job (or return the one an Idempotency-Key already made)."""
    job, created = jobs.create(
        _caller.account_id(), body["workflow"], body["input"], request.headers.get("Idempotency-Key")
    )
    return ok(job.to_dict(), 202 if created else 200, {"Location": f"/api/v1/jobs/{job.id}"})


def get_job(*, job_id: str) -> Response:
    """One of the caller's jobs (its body as bytes: the gate may have read it already)."""
    body = jobs.poll(_caller.account_id(), job_id, _caller.token_info().get("job_poll"))
    return current_app.response_class(body, 200, mimetype="application/json")


def list_jobs(*, status: str | None = None, limit: int = 20, cursor: str | None = None) -> Reply:
    """The caller's jobs, newest first, a page at a time."""
    return ok(jobs.list_page(_caller.account_id(), status, limit, cursor))


def cancel_job(*, job_id: str) -> Reply:
    """Cancel a queued or running job."""
    return ok(jobs.cancel(_caller.account_id(), job_id).to_dict())
