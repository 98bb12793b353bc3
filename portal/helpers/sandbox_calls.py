"""Sandbox calls the portal makes for a signed-in developer ("Run" on /docs/sdk).

The portal never holds a raw key: the call is admitted through the gate by the hash of the
account's active key, so it is limited and counted exactly like the same call made with the key
over HTTP, then answered by the same sandbox core the /api/sandbox/v1 handlers use.
"""

from dataclasses import dataclass, field

import redis

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.apijobs import sandbox, workflows
from levqor_core.keys import service as keys
from levqor_core.limits import gate


class NoActiveKey(problems.Problem):
    status, slug, title = 409, "no-active-key", "No active API key"


@dataclass(frozen=True)
class Operation:
    id: str
    method: str
    path: str
    body: dict | None = None


# What the portal can run: the sandbox twins of the SDK examples' calls.
OPERATIONS = {
    op.id: op
    for op in (
        Operation("sandbox_list_workflows", "GET", "/api/sandbox/v1/workflows"),
        Operation(
            "sandbox_create_job",
            "POST",
            "/api/sandbox/v1/jobs",
            {"workflow": "text-stats", "input": {"text": "Levqor runs workflows. Workflows run jobs.", "top": 3}},
        ),
        Operation("sandbox_list_jobs", "GET", "/api/sandbox/v1/jobs?limit=5"),
    )
}


@dataclass
class SandboxCall:
    operation: Operation
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


def run(r: redis.Redis, account: Account, operation_id: str) -> SandboxCall:
    """Make one sandbox call as the account's active key; raises the gate's typed problems."""
    operation = OPERATIONS.get(operation_id)
    if operation is None:
        raise problems.NotFound(f"There is no sandbox example {operation_id!r}.")
    key = keys.active_key(account.id)
    if key is None:
        raise NoActiveKey("Create an API key first: sandbox calls run as your key.")
    admitted = gate.current().authorize_hash(key.key_hash, "sandbox")
    if operation.id == "sandbox_list_workflows":
        status, body = 200, workflows.listing()
    elif operation.id == "sandbox_create_job":
        job, created = sandbox.create_job(r, account.id, operation.body["workflow"], operation.body["input"])
        status, body = (202 if created else 200), job.to_dict()
    else:
        status, body = 200, sandbox.list_jobs(r, account.id, None, 5, None)
    return SandboxCall(operation, status, body, admitted["headers"])
