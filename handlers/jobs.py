"""/v1/jobs"""

from flask import request

from levqor_core.apijobs import jobs

from . import _caller
from ._reply import ok


def create_job(body):
    job, created = jobs.create(
        _caller.account_id(), body["workflow"], body["input"], request.headers.get("Idempotency-Key")
    )
    return ok(job.to_dict(), 202 if created else 200, {"Location": f"/api/v1/jobs/{job.id}"})


def get_job(job_id):
    return ok(jobs.read(_caller.account_id(), job_id))


def list_jobs(status=None, limit=20, cursor=None):
    return ok(jobs.list_page(_caller.account_id(), status, limit, cursor))


def cancel_job(job_id):
    return ok(jobs.cancel(_caller.account_id(), job_id).to_dict())
