"""The sandbox: the v1 jobs API on mock storage in Redis, one day deep, per account.

Sandbox jobs never touch production tables. They complete at once with the workflow's
deterministic result, except `delay`, which stays `running` for its simulated seconds so
polling and cancelling can be practised (and counts against the tier's jobs in flight, as in
production).

Storage is bounded per account: an input of at most MAX_INPUT_BYTES, the newest MAX_JOBS jobs,
each for a day (README "Redis sizing").
"""

import json
import logging
import re
import secrets
import time
from datetime import UTC, datetime

import redis
import sqlalchemy as sa

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.apijobs import jobs, workflows
from levqor_core.extensions import db
from levqor_core.limits import tiers

log = logging.getLogger(__name__)
TTL = 86400
MAX_INPUT_BYTES = 8 * 1024  # of the input as compact JSON; production takes the whole body
MAX_RESULT_BYTES = 2 * MAX_INPUT_BYTES  # a larger result fails the job, as in production at its size
MAX_JOBS = 100  # kept per account, newest first (the daily cap is 100 calls per key)
# What one stored job may take in Redis: input, result, and the allocator's rounding.
MAX_BYTES_PER_JOB = 4 * MAX_INPUT_BYTES
# One step, so concurrent submissions cannot both take the last slot: drop delay jobs whose time
# is up, then admit this one only under the cap.
_HOLD_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
# Each job is indexed by "<created, µs, 16 digits>:<job id>" in a sorted set read by lex
# order: newest first, ties broken by id, and a cursor that names an exact position.
# (Float scores made cursors round past or onto the last item shown.)
INDEX_ENTRY = re.compile(r"[0-9]{16}:job_[0-9a-f]{20}")


def _prefix(account_id: int) -> str:
    return f"lvq:sbx:{account_id}"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _index_entry(created: float, job_id: str) -> str:
    return f"{int(created * 1e6):016d}:{job_id}"


def _view(raw: dict, now: float) -> dict:
    """The job as seen at `now`: a delay job finishes when its simulated time is up."""
    status, finished = raw["status"], raw.get("finished")
    if status == "running" and now >= raw["due"]:
        status, finished = "succeeded", raw["due"]
    return {
        "id": raw["id"],
        "workflow": raw["workflow"],
        "status": status,
        "input": raw["input"],
        "result": raw["result"] if status == "succeeded" else None,
        "error": raw.get("error"),
        "created_at": _iso(raw["created"]),
        "started_at": _iso(raw["created"]),
        "finished_at": _iso(finished),
    }


def _check_size(data: dict) -> None:
    size = len(json.dumps(data, separators=(",", ":")).encode())
    if size > MAX_INPUT_BYTES:
        raise problems.PayloadTooLarge(
            f"A sandbox job's input may take {MAX_INPUT_BYTES:,} bytes as JSON; this one takes {size:,}. "
            "Production jobs take the whole request body."
        )


def _hold_slot(r: redis.Redis, account_id: int, job_id: str, now: float, due: float) -> None:
    tier_name = db.session.scalar(sa.select(Account.tier).where(Account.id == account_id))
    tier = tiers.TIERS.get(tier_name or tiers.DEFAULT_TIER, tiers.TIERS[tiers.DEFAULT_TIER])
    cap = tier.max_jobs_in_flight
    if not r.eval(_HOLD_SLOT, 1, f"{_prefix(account_id)}:inflight", now, cap, due, job_id, TTL):
        raise jobs.too_many_in_flight(cap, tier, "sandbox ")


def create_job(
    r: redis.Redis,
    account_id: int,
    workflow_id: str,
    data: dict,
    idempotency_key: str | None = None,
):
    """Returns (job, created)."""
    workflow = jobs.check_input(workflow_id, data)
    _check_size(data)
    digest = jobs.request_hash(workflow_id, data)
    prefix = _prefix(account_id)
    now = time.time()
    if idempotency_key:
        earlier = r.get(f"{prefix}:idem:{idempotency_key}")
        if earlier:
            job_id, earlier_digest = earlier.decode().split("|")
            if earlier_digest != digest:
                raise problems.IdempotencyConflict("This Idempotency-Key was used with a different request body.")
            return get_job(r, account_id, job_id), False
    job_id = "job_" + secrets.token_hex(10)
    seconds, result, error = 0, None, None
    if workflow.id == "delay":
        # Simulated, not slept: the sandbox answers at once.
        seconds = int(data["seconds"])
        result = {"slept_seconds": seconds}
        if seconds > 0:
            _hold_slot(r, account_id, job_id, now, now + seconds)
    else:
        try:
            result = jobs.run_workflow(workflow, data, MAX_RESULT_BYTES)
        except Exception as err:  # as in production, a workflow failure is the job's outcome
            log.exception("sandbox job %s failed", job_id)
            error = jobs.failure(err)
    status = "failed" if error else "running" if seconds > 0 else "succeeded"
    raw = {
        "id": job_id,
        "workflow": workflow.id,
        "input": data,
        "result": result,
        "error": error,
        "status": status,
        "created": now,
        "due": now + seconds,
        "finished": None if status == "running" else now,
    }
    pipe = r.pipeline()
    pipe.set(f"{prefix}:job:{job_id}", json.dumps(raw), ex=TTL)
    pipe.zadd(f"{prefix}:index", {_index_entry(now, job_id): 0})
    pipe.zremrangebylex(f"{prefix}:index", "-", f"({_index_entry(now - TTL, '')}")
    pipe.expire(f"{prefix}:index", TTL)
    if idempotency_key:
        pipe.set(f"{prefix}:idem:{idempotency_key}", f"{job_id}|{digest}", ex=TTL, nx=True)
    pipe.zrange(f"{prefix}:index", 0, -MAX_JOBS - 1)
    dropped = pipe.execute()[-1]
    if dropped:
        _drop_oldest(r, prefix, [entry.decode() for entry in dropped])
    return _view(raw, now), True


def _drop_oldest(r: redis.Redis, prefix: str, entries: list[str]) -> None:
    """Forget the jobs past the newest MAX_JOBS (the index is in creation order)."""
    pipe = r.pipeline()
    pipe.delete(*(f"{prefix}:job:{entry.split(':', 1)[1]}" for entry in entries))
    pipe.zrem(f"{prefix}:index", *entries)
    pipe.zrem(f"{prefix}:inflight", *(entry.split(":", 1)[1] for entry in entries))
    pipe.execute()


def _load(r: redis.Redis, account_id: int, job_id: str) -> dict:
    blob = r.get(f"{_prefix(account_id)}:job:{job_id}")
    if blob is None:
        raise problems.NotFound(f"No sandbox job {job_id!r} (sandbox jobs are kept for a day).")
    return json.loads(blob)


def get_job(r: redis.Redis, account_id: int, job_id: str) -> dict:
    return _view(_load(r, account_id, job_id), time.time())


def list_jobs(r: redis.Redis, account_id: int, status: str | None, limit: int, cursor: str | None) -> dict:
    prefix, now = _prefix(account_id), time.time()
    upper = f"({jobs.unwrap_cursor('s', cursor, INDEX_ENTRY.fullmatch)}" if cursor else "+"
    oldest = f"[{_index_entry(now - TTL, '')}"
    entries_and_views = []
    # Walk newest first in batches, filtering by status as seen now.
    while len(entries_and_views) <= limit:
        entries = [e.decode() for e in r.zrevrangebylex(f"{prefix}:index", upper, oldest, start=0, num=100)]
        if not entries:
            break
        blobs = r.mget([f"{prefix}:job:{entry.split(':', 1)[1]}" for entry in entries])
        for entry, blob in zip(entries, blobs, strict=True):
            if blob is not None:
                view = _view(json.loads(blob), now)
                if status is None or view["status"] == status:
                    entries_and_views.append((entry, view))
        upper = f"({entries[-1]}"
    page, more = entries_and_views[:limit], len(entries_and_views) > limit
    return {
        "data": [view for _, view in page],
        "has_more": more,
        "next_cursor": jobs.wrap_cursor("s", page[-1][0]) if more else None,
    }


def cancel_job(r: redis.Redis, account_id: int, job_id: str) -> dict:
    raw, now = _load(r, account_id, job_id), time.time()
    view = _view(raw, now)
    if view["status"] not in ("queued", "running"):
        raise jobs.JobNotCancelable(f"Sandbox job {job_id} is already {view['status']}.")
    raw.update(status="canceled", finished=now)
    pipe = r.pipeline()
    pipe.set(f"{_prefix(account_id)}:job:{job_id}", json.dumps(raw), keepttl=True)
    pipe.zrem(f"{_prefix(account_id)}:inflight", job_id)
    pipe.execute()
    return _view(raw, now)


def list_workflows() -> list[dict]:
    return [w.to_dict() for w in workflows.CATALOGUE.values()]
