"""Drives the generated Python SDK against a running Levqor; prints what happened as JSON.

Run by tests/test_sdk.py inside a fresh virtualenv where only the SDK is installed, with
LEVQOR_BASE_URL and LEVQOR_API_KEY set.
"""

import json
import os

from levqor.client import Levqor
from levqor.errors import AuthenticationError, RateLimitError
from levqor.exceptions import UnauthorizedException
from levqor.models.job_create import JobCreate

BASE = os.environ["LEVQOR_BASE_URL"]
KEY = os.environ["LEVQOR_API_KEY"]
out = {}

client = Levqor(KEY, base_url=BASE)
created = client.sandbox.sandbox_create_job(JobCreate(workflow="echo", input={"message": "from python"}))
got = client.sandbox.sandbox_get_job(created.id)
out["created"] = {"id": created.id, "status": created.status.value}
out["read_back"] = {"id": got.id, "status": got.status.value, "result": got.result}

# environment="sandbox": the plain /v1 operations reach the sandbox through its server URL.
sandbox = Levqor(KEY, base_url=BASE, environment="sandbox")
more = [sandbox.jobs.create_job({"workflow": "echo", "input": {"message": f"n{i}"}}).id for i in range(2)]
first = sandbox.jobs.create_job({"workflow": "echo", "input": {"message": "once"}}, idempotency_key="fixed-key-1")
again = sandbox.jobs.create_job({"workflow": "echo", "input": {"message": "once"}}, idempotency_key="fixed-key-1")
out["created_ids"] = [created.id, *more, first.id]
out["replayed_same_job"] = first.id == again.id

out["listed_ids"] = [job.id for job in client.sandbox.iter_jobs(limit=3)]
out["listed_via_v1_ids"] = [job.id for job in sandbox.jobs.iter_jobs(limit=2)]

try:
    Levqor("lvq_" + "0" * 32 + "_AAAAAA", base_url=BASE).sandbox.sandbox_list_jobs()
except AuthenticationError as err:
    out["bad_key"] = {
        "class": type(err).__name__,
        "status": err.status,
        "type": err.type,
        "title": err.title,
        "is_generated_unauthorized": isinstance(err, UnauthorizedException),
    }

retries = []
patient = Levqor(KEY, base_url=BASE, on_retry=retries.append)
calls = 0
while not retries and calls < 200:
    usage = patient.usage.get_usage()  # returns only once the call succeeded, retried or not
    calls += 1
out["burst"] = {
    "calls": calls,
    "retries": [{"status": e.status, "wait": e.wait, "method": e.method} for e in retries],
    "succeeded_after_retry": bool(retries) and usage.tier.value == "sandbox",
}

impatient = Levqor(KEY, base_url=BASE, max_retries=0)
for _ in range(200):
    try:
        impatient.usage.get_usage()
    except RateLimitError as err:
        out["rate_limited"] = {
            "class": type(err).__name__,
            "status": err.status,
            "type": err.type,
            "retry_after": err.retry_after,
        }
        break

print(json.dumps(out))
