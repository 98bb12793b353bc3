"""/sandbox/v1: the v1 operations on mock data."""

from flask import request

from levqor_core import redis_conn
from levqor_core.apijobs import sandbox, workflows

from . import _caller
from ._reply import Reply, ok


def _redis():
    return redis_conn.for_limits()


def sandbox_create_job(*, body: dict) -> Reply:
    """Queue a sandbox job (mock data, 100 calls a day)."""
    job, created = sandbox.create_job(
        _redis(), _caller.account_id(), body["workflow"], body["input"], request.headers.get("Idempotency-Key")
    )
    return ok(job.to_dict(), 202 if created else 200, {"Location": f"/api/sandbox/v1/jobs/{job.id}"})


def sandbox_get_job(*, job_id: str) -> Reply:
    """One of the caller's sandbox jobs."""
    return ok(sandbox.get_job(_redis(), _caller.account_id(), job_id))


def sandbox_list_jobs(*, status: str | None = None, limit: int = 20, cursor: str | None = None) -> Reply:
    """The caller's sandbox jobs, newest first, a page at a time."""
    return ok(sandbox.list_jobs(_redis(), _caller.account_id(), status, limit, cursor))


def sandbox_cancel_job(*, job_id: str) -> Reply:
    """Cancel a queued or running sandbox job."""
    return ok(sandbox.cancel_job(_redis(), _caller.account_id(), job_id).to_dict())


def sandbox_list_workflows() -> Reply:
    """The workflow catalogue (the same as production's)."""
    return ok(workflows.listing())  # the same catalogue as production's


def sandbox_get_workflow(*, workflow_id: str) -> Reply:
    """One workflow with its input schema."""
    return ok(workflows.read(workflow_id))
