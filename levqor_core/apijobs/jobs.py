"""Jobs: runs of a workflow for an account, persisted, queued on RQ and executed by a worker.

Also the rules the sandbox's jobs share with them: the idempotency check, the compact-JSON
size measure, running a workflow to a result or an error, the tier that caps jobs in flight."""

import contextlib
import hashlib
import json
import logging
from collections import namedtuple
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import redis
import sqlalchemy as sa
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from sqlalchemy.exc import IntegrityError

from levqor_core import config, problems, queue, redis_conn, tiers
from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.apijobs import pagination, poll_cache, workflows
from levqor_core.apijobs.models import FINISHED, IN_FLIGHT, PUBLIC_COLUMNS, Job, new_job_id, public_job
from levqor_core.apijobs.problems import JobNotCancelable, TooManyJobsInFlight
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.webhooks import events

log = logging.getLogger(__name__)
RUN_TASK = "jobs.tasks.run_job"
PURGE_BATCH = 1000
# A result is stored with its job: json-transform can repeat its document up to 100 times.
MAX_RESULT_BYTES = 256 * 1024


def request_hash(workflow_id: str, data: dict) -> str:
    canonical = json.dumps({"workflow": workflow_id, "input": data}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_same_request(earlier_digest: str | None, digest: str) -> None:
    """An Idempotency-Key sent again names the earlier job only with the same request."""
    if earlier_digest != digest:
        raise problems.IdempotencyConflict(
            "This Idempotency-Key was used with a different request body; use a new key."
        )


def compact_size(value) -> int:
    """The bytes `value` takes as compact JSON: the measure of every input and result limit."""
    return len(json.dumps(value, separators=(",", ":")).encode())


class ResultTooLarge(Exception):
    """A workflow's result over the size a job may store: the job fails with this error."""


def run_workflow(
    workflow: workflows.Workflow | None, data: dict, label: str, max_result_bytes: int = MAX_RESULT_BYTES
) -> tuple[object, dict | None]:
    """Run a job's workflow: (result, None), or (None, error) when it fails. A workflow failure
    is the job's outcome, not its runner's crash; `label` names the job in the log."""
    try:
        result = workflow.run(data)
        size = compact_size(result)
        if size > max_result_bytes:
            raise ResultTooLarge(f"The result takes {size:,} bytes as JSON; a job may store {max_result_bytes:,}.")
    except Exception as err:
        log.exception("%s failed", label)
        return None, {"type": type(err).__name__, "message": str(err)[:500]}
    return result, None


def account_tier(account_id: int) -> tiers.Tier:
    """The account's tier, whose cap bounds its jobs in flight."""
    return _tier_named(db.session.scalar(sa.select(Account.tier).where(Account.id == account_id)))


def _tier_named(tier_name: str | None) -> tiers.Tier:
    return tiers.TIERS.get(tier_name or tiers.DEFAULT_TIER, tiers.TIERS[tiers.DEFAULT_TIER])


def create(account_id: int, workflow_id: str, data: dict, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Create and enqueue a job; (job, False) when the idempotency key names an earlier one."""
    workflows.for_input(workflow_id, data)
    digest = request_hash(workflow_id, data)
    if idempotency_key:
        earlier = _by_idempotency_key(account_id, idempotency_key, digest)
        if earlier:
            return earlier, False
    # Every column the API shows is set here, as committed: nothing is read back after the commit.
    row = {
        "id": new_job_id(),
        "account_id": account_id,
        "workflow": workflow_id,
        "input": data,
        "status": "queued",
        "result": None,
        "error": None,
        "idempotency_key": idempotency_key,
        "request_hash": digest,
        "created_at": utcnow(),
        "started_at": None,
        "finished_at": None,
    }
    # Core statements on the session's connection, not the ORM: the submit is the API's busiest
    # write, and the ORM's statement handling and unit of work took about half of its Flask
    # thread's CPU (docs/performance.md, "The job submit"). The job is never in the session.
    connection = db.session.connection()
    try:
        _hold_in_flight_slot(connection, account_id)
        connection.execute(_INSERT_JOB, row)
        db.session.commit()
    except IntegrityError:
        # A concurrent request with the same idempotency key won the race.
        db.session.rollback()
        earlier = _by_idempotency_key(account_id, idempotency_key, digest) if idempotency_key else None
        if earlier is None:
            raise
        return earlier, False
    job = Job(**row)
    queue.enqueue(RUN_TASK, job.id, job.account_id, job_id=f"run-{job.id}")
    return job, True


_ACCOUNTS = Account.__table__
_JOBS = Job.__table__
_INSERT_JOB = sa.insert(_JOBS)
_TIER_LOCKED = sa.select(_ACCOUNTS.c.tier).where(_ACCOUNTS.c.id == sa.bindparam("account_id")).with_for_update()
_IN_FLIGHT = sa.select(sa.func.count()).where(
    _JOBS.c.account_id == sa.bindparam("account_id"), _JOBS.c.status.in_(IN_FLIGHT)
)


def _hold_in_flight_slot(connection: sa.Connection, account_id: int) -> None:
    """Refuse a job beyond the tier's in-flight cap. The account row stays locked until the new
    job is committed, so concurrent submissions of one account are counted one after another
    (on PostgreSQL; SQLite, the embedded default, serialises writers anyway). The count is its
    own statement, run after the lock is held: on PostgreSQL a statement reads the jobs committed
    before it began, so a count in the locking statement would miss the one the lock waited for."""
    params = {"account_id": account_id}
    tier_name = connection.scalar(_TIER_LOCKED, params)
    if tier_name is None:  # deleted since the gate admitted the call: its INSERT would break the foreign key
        db.session.rollback()
        raise problems.NotAuthenticated("This account no longer exists.")
    tier = _tier_named(tier_name)
    if connection.scalar(_IN_FLIGHT, params) >= tier.max_jobs_in_flight:
        db.session.rollback()
        raise TooManyJobsInFlight.at_cap(tier)


def _by_idempotency_key(account_id: int, key: str, digest: str) -> Job | None:
    job = db.session.scalar(sa.select(Job).where(Job.account_id == account_id, Job.idempotency_key == key))
    if job is not None:
        check_same_request(job.request_hash, digest)
    return job


# The poll's one statement: the public columns of one job of one account, by its unique public id.
_POLL = sa.select(*(_JOBS.c[name] for name in PUBLIC_COLUMNS)).where(
    _JOBS.c.id == sa.bindparam("job_id"), _JOBS.c.account_id == sa.bindparam("account_id")
)


def poll(account_id: int, job_id: str, offer: tuple[bytes, bytes] | None = None) -> bytes:
    """The job poll's body: the answer the gate read with its round trip, else the database's
    (`read`), held for the next polls when the gate offered a way to (`offer`: poll_cache)."""
    if offer is not None and poll_cache.is_answer(offer[0]):
        return offer[0]
    answer = poll_cache.body(read(account_id, job_id))
    if offer is not None and offer[0].startswith(poll_cache.FILL):
        poll_cache.fill(redis_conn.for_limits(), account_id, job_id, offer, answer)
    return answer


def read(account_id: int, job_id: str) -> dict:
    """A job as the API shows it, read as the worker last committed it.

    Polling is the API's most frequent call, so this is one SELECT of the public columns, rendered
    straight to the response: no ORM session, identity map or instance. On PostgreSQL it runs as
    a plain DBAPI cursor on the poll's own autocommit pool (config.binds): no pre-ping, no
    autocommit set and reset, no SQLAlchemy result layer (the read alone ~300 → ~100 µs of CPU in
    process; bench/cpu_job_poll.py measures the whole call). It reads the last committed status
    (tests/test_job_poll.py); what `poll` holds of it in Redis is dropped by every write."""
    params = {"job_id": job_id, "account_id": account_id}
    engine = db.engines.get(config.JOB_POLL_BIND)
    if engine is None:  # SQLite, the embedded default
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            row = connection.execute(_POLL, params).one_or_none()
    else:
        row = _read_unpinged(engine, params)
    if row is None:
        raise problems.NotFound(f"No job {job_id!r} in this account.")
    return public_job(row)


# A row of PUBLIC_COLUMNS, read by name as public_job() reads a Job.
PublicRow = namedtuple("PublicRow", PUBLIC_COLUMNS)


_POLL_SQL: dict[tuple[str, str], str] = {}


def poll_sql(dialect: sa.Dialect) -> str:
    """The poll's statement as the dialect's DBAPI takes it (`%(job_id)s` parameters on psycopg)."""
    key = (dialect.name, dialect.driver)
    sql = _POLL_SQL.get(key)
    if sql is None:
        sql = _POLL_SQL[key] = str(_POLL.compile(dialect=dialect))
    return sql


def _read_unpinged(engine: sa.Engine, params: dict, *, retry_if_dropped: bool = True) -> tuple | None:
    """The poll's SELECT on the poll pool. Its connections are not pinged on checkout: one the
    server dropped while it idled (a restart, a pooler's idle timeout) fails here, is discarded,
    and the read runs once more on a new one. Any other error is raised as it is."""
    sql = poll_sql(engine.dialect)
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        finally:
            cursor.close()
    except engine.dialect.loaded_dbapi.Error as err:
        if not (retry_if_dropped and engine.dialect.is_disconnect(err, connection.dbapi_connection, None)):
            raise
        log.warning("job poll: the server dropped a pooled connection (%s); reading on a new one", err)
        connection.invalidate(err)
        # What dropped this one (a restart, a failover) dropped the pool's idle ones too: all go, as
        # SQLAlchemy's own disconnect handling invalidates a pool's older connections at once.
        engine.dispose()
    else:
        return None if row is None else PublicRow._make(row)
    finally:
        connection.close()
    return _read_unpinged(engine, params, retry_if_dropped=False)


def get(account_id: int, job_id: str) -> Job:
    job = db.session.scalar(sa.select(Job).where(Job.id == job_id, Job.account_id == account_id))
    if job is None:
        raise problems.NotFound(f"No job {job_id!r} in this account.")
    return job


def _is_seq(text: str) -> bool:
    # A BIGINT column: a larger number is not a cursor we gave out.
    return text.isascii() and text.isdigit() and 0 < int(text) < 2**63


CURSORS = pagination.Cursors("j", _is_seq)


def list_page(account_id: int, status: str | None, limit: int, cursor: str | None) -> dict:
    """Newest first, `limit` per page, continued by an opaque cursor."""
    query = sa.select(Job).where(Job.account_id == account_id)
    if status:
        query = query.where(Job.status == status)
    if cursor:
        query = query.where(Job.seq < int(CURSORS.decode(cursor)))
    rows = db.session.scalars(query.order_by(Job.seq.desc()).limit(limit + 1)).all()
    return pagination.page(rows, limit, CURSORS, lambda job: str(job.seq), Job.to_dict)


def cancel(account_id: int, job_id: str) -> Job:
    job = get(account_id, job_id)
    with poll_cache.writes([(account_id, job.id)]):
        updated = db.session.execute(
            sa.update(Job)
            .where(Job.seq == job.seq, Job.status.in_(IN_FLIGHT))
            .values(status="canceled", finished_at=utcnow())
        ).rowcount
        db.session.commit()
    db.session.refresh(job)
    if not updated:
        raise JobNotCancelable(f"Job {job_id} is already {job.status}.")
    _stop_if_running(job.id)
    events.emit(account_id, "job.canceled", job.to_dict)
    return job


def _stop_if_running(job_id: str) -> None:
    """Free the worker a canceled job holds: RQ kills the work horse, and does not retry it.
    (A job that has not started is left to the worker, which skips canceled jobs.)"""
    try:
        send_stop_job_command(queue.get_queue().connection, f"run-{job_id}")
    except (NoSuchJobError, InvalidJobOperation):
        pass  # not started, already finished, or never queued (Redis was down)
    except redis.RedisError as err:
        log.warning("could not stop job %s on its worker: %s", job_id, err)


def purge_finished(now, retention: timedelta) -> int:
    """Delete the jobs that finished more than `retention` ago, input and result with them;
    jobs still queued or running are kept whatever their age. Returns how many went."""
    cutoff, purged = now - retention, 0
    while True:
        batch = db.session.execute(
            sa.select(Job.seq, Job.account_id, Job.id)
            .where(Job.status.in_(FINISHED), Job.finished_at < cutoff)
            .limit(PURGE_BATCH)
        ).all()
        if not batch:
            return purged
        deleted = db.session.execute(sa.delete(Job).where(Job.seq.in_([row.seq for row in batch]))).rowcount
        db.session.commit()  # in batches: short transactions, and progress survives an interruption
        poll_cache.forget([(row.account_id, row.id) for row in batch])
        if not deleted:
            return purged
        purged += deleted


def requeue_stranded(now, queued_for=timedelta(minutes=2), running_for=timedelta(minutes=2)) -> int:
    """Enqueue again the jobs nothing will run: created while Redis was down, lost with a Redis
    restart, or left `running` by a worker that died (RQ stops a job after queue.API_JOB_TIMEOUT, well
    inside `running_for`). Returns how many were requeued."""
    connection = queue.get_queue().connection
    left_running = db.session.execute(
        sa.select(Job.account_id, Job.id).where(Job.status == "running", Job.started_at < now - running_for)
    ).all()
    with poll_cache.writes([(row.account_id, row.id) for row in left_running]):
        db.session.execute(
            sa.update(Job)
            .where(Job.id.in_([row.id for row in left_running]), Job.status == "running")
            .where(Job.started_at < now - running_for)
            .values(status="queued", started_at=None)
        )
        db.session.commit()
    stranded = db.session.scalars(sa.select(Job).where(Job.status == "queued", Job.created_at < now - queued_for))
    requeued = 0
    for job in stranded:
        try:
            alive = RQJob.fetch(f"run-{job.id}", connection=connection).get_status() in (
                "queued",
                "started",
                "deferred",
                "scheduled",
            )
        except NoSuchJobError:
            alive = False
        if not alive and queue.enqueue(RUN_TASK, job.id, job.account_id, job_id=f"run-{job.id}"):
            requeued += 1
    return requeued


# The worker's two writes, each atomic by itself: queued → running, returning what the job runs on;
# running → its outcome, returning the job as the API shows it (the body of its event).
_START = (
    sa.update(_JOBS)
    .where(_JOBS.c.id == sa.bindparam("job_id"), _JOBS.c.status == "queued")
    .values(status="running", started_at=sa.bindparam("now"))
    .returning(_JOBS.c.account_id, _JOBS.c.workflow, _JOBS.c.input)
)
_STATUS = sa.select(_JOBS.c.status).where(_JOBS.c.id == sa.bindparam("job_id"))
_ACCOUNT = sa.select(_JOBS.c.account_id).where(_JOBS.c.id == sa.bindparam("job_id"))


def _finish(outcome: dict):
    return (
        sa.update(_JOBS)
        .where(_JOBS.c.id == sa.bindparam("job_id"), _JOBS.c.status == "running")
        .values(finished_at=sa.bindparam("now"), **outcome)
        .returning(*(_JOBS.c[name] for name in PUBLIC_COLUMNS))
    )


def execute(
    job_id: str,
    account_id: int | None = None,
    *,
    guard: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> str:
    """Run a queued job (called by the worker); returns its final status. Safe to call twice.

    Two statements on an autocommit connection (no BEGIN, COMMIT or reload: a job is two round trips
    and its event's check for endpoints), each a compare-and-set on the status, so a job runs once
    and a cancel while it ran wins (and told its own event). `guard` wraps the workflow's run only:
    the worker's lets a cancel stop the job there and nowhere else (jobs/stopping.py).

    The poll's answers in Redis are told once around both writes and the run between them
    (poll_cache.writes, in `account_id`'s slot, read here when the queued call did not carry it):
    two round trips per job rather than four, one of them before the start. While the job runs its
    polls read the database, as they must around each of its writes anyway."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if account_id is None:
            account_id = connection.scalar(_ACCOUNT, {"job_id": job_id})
            if account_id is None:
                return "missing"
        with poll_cache.writes([(account_id, job_id)], seconds=queue.API_JOB_TIMEOUT + 30):
            started = connection.execute(_START, {"job_id": job_id, "now": utcnow()}).one_or_none()
            if started is None:  # already run, running elsewhere, canceled, or gone
                return connection.scalar(_STATUS, {"job_id": job_id}) or "missing"
            with guard():
                result, error = run_workflow(workflows.get(started.workflow), started.input, f"job {job_id}")
            outcome = {"status": "failed", "error": error} if error else {"status": "succeeded", "result": result}
            finished = connection.execute(_finish(outcome), {"job_id": job_id, "now": utcnow()}).one_or_none()
            if finished is None:
                return connection.scalar(_STATUS, {"job_id": job_id}) or "missing"
    shown = public_job(finished)
    events.emit(started.account_id, f"job.{shown['status']}", shown)
    return shown["status"]


@deletion.step("job-rows", deletion.ROWS, tables=("jobs",))
def _delete_job_rows(account: Account, _actor) -> None:
    db.session.execute(sa.delete(Job).where(Job.account_id == account.id))
