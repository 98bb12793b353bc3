"""The sandbox: the v1 jobs API on mock storage in Redis, one day deep, per account.

Sandbox jobs never touch production tables. They complete at once with the workflow's
deterministic result, except `delay`, which stays `running` for its simulated seconds so
polling and cancelling can be practised (and counts against the tier's jobs in flight, as in
production).

Storage is bounded per account: an input of at most MAX_INPUT_BYTES, the newest MAX_JOBS jobs,
each for a day (README "Redis sizing"). Every key of an account's sandbox carries its hash tag
(`key_prefix`), so its transactions and MGETs stay in one slot of a Redis Cluster, and the names
of its keys are all known (the index, the idempotency keys' set): deleting them needs no SCAN.
"""

import json
import logging
import re
import time
from datetime import UTC, datetime

import redis

from levqor_core import problems, redis_conn
from levqor_core.accounts import deletion
from levqor_core.apijobs import jobs, pagination, workflows
from levqor_core.apijobs.models import IN_FLIGHT, Job, new_job_id
from levqor_core.apijobs.problems import JobNotCancelable, TooManyJobsInFlight
from levqor_core.webhooks import dispatch, events

log = logging.getLogger(__name__)

STREAM_END_TASK = "jobs.tasks.stream_sandbox_job_end"  # by name: the core never imports jobs/
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
CURSORS = pagination.Cursors("s", INDEX_ENTRY.fullmatch)


def key_prefix(account_id: int) -> str:
    """Every sandbox key of the account starts with this (its hash tag: one slot)."""
    return f"lvq:sbx:{{{account_id}}}"


def forget_account(r: redis.Redis, account_id: int) -> None:
    """Delete every sandbox job and counter of the account (account deletion)."""
    prefix = key_prefix(account_id)
    entries = [e.decode() for e in r.zrange(f"{prefix}:index", 0, -1)]
    idems = [k.decode() for k in r.smembers(f"{prefix}:idems")]
    job_ids = [entry.split(":", 1)[1] for entry in entries]
    jobs_keys = [f"{prefix}:job:{job_id}" for job_id in job_ids] + [_streamed_key(prefix, j) for j in job_ids]
    names = [*jobs_keys, *idems, f"{prefix}:index", f"{prefix}:inflight", f"{prefix}:idems"]
    for start in range(0, len(names), 500):  # one round trip per batch, not per key
        r.unlink(*names[start : start + 500])


def _at(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


def _index_entry(created: float, job_id: str) -> str:
    return f"{int(created * 1e6):016d}:{job_id}"


def _as_job(raw: dict, now: float) -> Job:
    """The stored job as seen at `now`, as a Job never saved, so the API shows it as it shows a
    production job: a delay job finishes when its simulated time is up."""
    status, finished = raw["status"], raw.get("finished")
    if status == "running" and now >= raw["due"]:
        status, finished = "succeeded", raw["due"]
    return Job(
        id=raw["id"],
        workflow=raw["workflow"],
        status=status,
        input=raw["input"],
        result=raw["result"] if status == "succeeded" else None,
        error=raw.get("error"),
        created_at=_at(raw["created"]),
        started_at=_at(raw["created"]),
        finished_at=_at(finished),
    )


def _check_size(data: dict) -> None:
    size = jobs.compact_size(data)
    if size > MAX_INPUT_BYTES:
        raise problems.PayloadTooLarge(
            f"A sandbox job's input may take {MAX_INPUT_BYTES:,} bytes as JSON; this one takes {size:,}. "
            "Production jobs take the whole request body."
        )


def _hold_slot(r: redis.Redis, account_id: int, job_id: str, now: float, due: float) -> None:
    tier = jobs.account_tier(account_id)
    if not r.eval(_HOLD_SLOT, 1, f"{key_prefix(account_id)}:inflight", now, tier.max_jobs_in_flight, due, job_id, TTL):
        raise TooManyJobsInFlight.at_cap(tier, "sandbox ")


def create_job(
    r: redis.Redis,
    account_id: int,
    workflow_id: str,
    data: dict,
    idempotency_key: str | None = None,
) -> tuple[Job, bool]:
    """Create a sandbox job; (job, False) when the idempotency key names an earlier one."""
    workflow = workflows.for_input(workflow_id, data)
    _check_size(data)
    digest = jobs.request_hash(workflow_id, data)
    prefix = key_prefix(account_id)
    now = time.time()
    if idempotency_key:
        earlier = r.get(f"{prefix}:idem:{idempotency_key}")
        if earlier:
            job_id, earlier_digest = earlier.decode().split("|")
            jobs.check_same_request(earlier_digest, digest)
            return _as_job(_load(r, account_id, job_id), now), False
    job_id = new_job_id()
    seconds, result, error = 0, None, None
    if workflow.id == "delay":
        # Simulated, not slept: the sandbox answers at once.
        seconds = int(data["seconds"])
        result = {"slept_seconds": seconds}
        if seconds > 0:
            _hold_slot(r, account_id, job_id, now, now + seconds)
    else:
        result, error = jobs.run_workflow(workflow, data, f"sandbox job {job_id}", MAX_RESULT_BYTES)
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
        pipe.sadd(f"{prefix}:idems", f"{prefix}:idem:{idempotency_key}")  # forget_account's list
        pipe.expire(f"{prefix}:idems", TTL)
    pipe.zrange(f"{prefix}:index", 0, -MAX_JOBS - 1)
    dropped = pipe.execute()[-1]
    if dropped:
        _drop_oldest(r, prefix, [entry.decode() for entry in dropped])
    job = _as_job(raw, now)
    if status != "running":
        events.emit(account_id, f"job.{status}", job.to_dict, sandbox=True)
    else:
        _announce_end(r, account_id, raw)
    return job, True


def _announce_end(r: redis.Redis, account_id: int, raw: dict) -> None:
    """A delay job's end is only computed when read, but known in advance: its job.succeeded is
    recorded now, due at that end; the deliveries' ids are kept with the job so a cancel before
    then withdraws them. The account's event stream (`levqor listen`) gets it at that end, from
    the worker (stream_end), unless the job was canceled by then."""
    due = raw["due"]
    dispatch.schedule(STREAM_END_TASK, _at(due), account_id, raw["id"])
    ids = events.emit(account_id, "job.succeeded", lambda: _as_job(raw, due).to_dict(), sandbox=True, at=_at(due))
    if ids:
        raw["webhook_deliveries"] = ids
        try:
            r.set(f"{key_prefix(account_id)}:job:{raw['id']}", json.dumps(raw), keepttl=True)
        except redis.RedisError as err:  # the job stands; a cancel would then not withdraw them
            log.warning("could not note the webhook deliveries of sandbox job %s: %s", raw["id"], err)


def _streamed_key(prefix: str, job_id: str) -> str:
    return f"{prefix}:job:{job_id}:streamed"


def stream_end(r: redis.Redis, account_id: int, job_id: str) -> bool:
    """A delay job's end, come: its job.succeeded on the account's sandbox event stream, the body
    its deliveries carry (dated at the end). Nothing if it was canceled before (or dropped, or not
    due yet), and nothing the second time (an RQ job may run again). True when streamed."""
    try:
        raw = _load(r, account_id, job_id)
    except problems.NotFound:
        return False
    now = time.time()
    if raw["status"] != "running" or now < raw["due"]:  # canceled, or not its end yet
        return False
    if not r.set(_streamed_key(key_prefix(account_id), job_id), 1, nx=True, ex=TTL):
        return False
    events.stream(account_id, "job.succeeded", _as_job(raw, now).to_dict(), sandbox=True, at=_at(raw["due"]))
    return True


def _drop_oldest(r: redis.Redis, prefix: str, entries: list[str]) -> None:
    """Forget the jobs past the newest MAX_JOBS (the index is in creation order)."""
    pipe = r.pipeline()
    for job_id in (entry.split(":", 1)[1] for entry in entries):
        # One key per DEL: redis-py's cluster pipeline refuses a DEL of several keys.
        pipe.delete(f"{prefix}:job:{job_id}")
        pipe.delete(_streamed_key(prefix, job_id))
    pipe.zrem(f"{prefix}:index", *entries)
    pipe.zrem(f"{prefix}:inflight", *(entry.split(":", 1)[1] for entry in entries))
    pipe.execute()


def _load(r: redis.Redis, account_id: int, job_id: str) -> dict:
    blob = r.get(f"{key_prefix(account_id)}:job:{job_id}")
    if blob is None:
        raise problems.NotFound(f"No sandbox job {job_id!r} (sandbox jobs are kept for a day).")
    return json.loads(blob)


def get_job(r: redis.Redis, account_id: int, job_id: str) -> dict:
    """A sandbox job as the API shows it."""
    return _as_job(_load(r, account_id, job_id), time.time()).to_dict()


def list_jobs(r: redis.Redis, account_id: int, status: str | None, limit: int, cursor: str | None) -> dict:
    """Newest first, `limit` per page, continued by an opaque cursor (as `GET /v1/jobs`)."""
    prefix, now = key_prefix(account_id), time.time()
    upper = f"({CURSORS.decode(cursor)}" if cursor else "+"
    oldest = f"[{_index_entry(now - TTL, '')}"
    found: list[tuple[str, Job]] = []  # (index entry, job)
    # Walk newest first in batches, filtering by status as seen now.
    while len(found) <= limit:
        entries = [e.decode() for e in r.zrevrangebylex(f"{prefix}:index", upper, oldest, start=0, num=100)]
        if not entries:
            break
        blobs = r.mget([f"{prefix}:job:{entry.split(':', 1)[1]}" for entry in entries])
        for entry, blob in zip(entries, blobs, strict=True):
            if blob is not None:
                job = _as_job(json.loads(blob), now)
                if status is None or job.status == status:
                    found.append((entry, job))
        upper = f"({entries[-1]}"
    return pagination.page(found, limit, CURSORS, lambda row: row[0], lambda row: row[1].to_dict())


def cancel_job(r: redis.Redis, account_id: int, job_id: str) -> Job:
    """Cancel a sandbox job still in flight; one that has finished is a 409, as in production."""
    raw, now = _load(r, account_id, job_id), time.time()
    seen = _as_job(raw, now).status
    if seen not in IN_FLIGHT:
        raise JobNotCancelable(f"Sandbox job {job_id} is already {seen}.")
    raw.update(status="canceled", finished=now)
    pipe = r.pipeline()
    pipe.set(f"{key_prefix(account_id)}:job:{job_id}", json.dumps(raw), keepttl=True)
    pipe.zrem(f"{key_prefix(account_id)}:inflight", job_id)
    pipe.execute()
    job = _as_job(raw, now)
    events.withdraw(raw.get("webhook_deliveries", []))  # its announced end will not come
    events.emit(account_id, "job.canceled", job.to_dict, sandbox=True)
    return job


@deletion.step("forget-sandbox-jobs", deletion.CACHES)
def _forget_deleted_account(account, _actor) -> None:
    try:
        forget_account(redis_conn.for_limits(), account.id)
    except redis.RedisError as err:  # the flusher drops counters of deleted accounts anyway
        log.warning("account %s deleted while Redis is unavailable: %s", account.id, err)
