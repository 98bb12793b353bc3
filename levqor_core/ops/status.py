"""What is running, for operators: RQ workers and queues, API jobs over 24 h, Redis memory, HTTP
errors, the health log, the Notion sync's progress. Read by the `/developer/ops` page and by `/metrics`.

Redis-derived figures come from RQ's own APIs and INFO, read live (a few round trips). The
database-derived ones (jobs by state: the counts triggers keep in `job_state_counts`; the 24 h
counts and p95: a range of the (finished_at, status) index) are cached
for OPS_DB_CACHE_SECONDS, in Redis (shared by every process; one process recomputes while the
others keep serving the previous figures) and per process, so a scrape's database cost is bounded
whatever the scrape rate, the number of scrapers, or whether Redis is up.

Every section is gathered on its own: a section that cannot be read (Redis down, database down)
is reported as an error next to the sections that could.
"""

import contextlib
import json
import logging
import math
import threading
import time
from datetime import UTC, date, datetime, timedelta

import redis
import sqlalchemy as sa
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob

from levqor_core.apijobs.models import Job, JobStateCount
from levqor_core.ops import daily_stats, periodic
from levqor_core.ops.models import HealthLogEntry
from levqor_core.queue import QUEUES

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
FINISHED_STATES = ("succeeded", "failed", "canceled")
JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled")
DB_CACHE_SECONDS = 15.0
CACHE_KEY = "lvq:ops:db-figures"
LOCK_KEY = "lvq:ops:db-figures:lock"
# The oldest waiting job is the head of RQ's list; a few more are read in case its hash is gone.
HEAD_PEEK = 5


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)  # RQ returns naive UTC datetimes
    return moment


# -- Redis: workers, queues, memory ----------------------------------------------------------------


def workers(r: redis.Redis, now: datetime | None = None) -> list[dict]:
    """Every registered RQ worker: queues, state, current job, last heartbeat and its age.

    RQ lists a worker while its Redis key lives; each heartbeat extends that key by the worker's
    TTL (+ 60 s), so a listed worker is alive by RQ's own rule. One killed without warning stays
    listed until its TTL lapses, with a heartbeat growing old: the age is shown for that reason.
    """
    now = now or _now()
    found = []
    for worker in Worker.all(connection=r):
        heartbeat = _aware(worker.last_heartbeat)
        found.append(
            {
                "name": worker.name,
                "queues": worker.queue_names(),
                "state": str(worker.get_state()),
                "current_job_id": worker.get_current_job_id(),
                "last_heartbeat": heartbeat,
                "heartbeat_age_seconds": round((now - heartbeat).total_seconds(), 1) if heartbeat else None,
                "alive": heartbeat is not None,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "successful_jobs": worker.successful_job_count,
                "failed_jobs": worker.failed_job_count,
                "born": _aware(worker.birth_date),
            }
        )
    return sorted(found, key=lambda w: (w["queues"], w["name"]))


def oldest_enqueued_at(queue: Queue) -> datetime | None:
    """When the job at the head of the queue (the next one a worker takes) was enqueued."""
    ids = queue.get_job_ids(0, HEAD_PEEK)
    for job in RQJob.fetch_many(ids, connection=queue.connection):
        if job is not None and job.enqueued_at is not None:
            return _aware(job.enqueued_at)
    return None


def _registries(queue: Queue):
    return (
        ("started", queue.started_job_registry),
        ("deferred", queue.deferred_job_registry),
        ("scheduled", queue.scheduled_job_registry),
        ("finished", queue.finished_job_registry),
        ("failed", queue.failed_job_registry),
    )


def queues(r: redis.Redis, worker_list: list[dict] | None = None, now: datetime | None = None) -> list[dict]:
    """Per queue: jobs waiting, the age of the oldest, the jobs started, and the workers alive."""
    now = now or _now()
    worker_list = workers(r, now) if worker_list is None else worker_list
    found = []
    for name in QUEUES:
        queue = Queue(name, connection=r)
        oldest = oldest_enqueued_at(queue)
        serving = [w for w in worker_list if name in w["queues"]]
        found.append(
            {
                "name": name,
                "depth": queue.count,
                # Read-only: `.count` would also run the registry's cleanup, the worker's chore.
                **{state: registry.get_job_count(cleanup=False) for state, registry in _registries(queue)},
                "oldest_enqueued_at": oldest,
                "oldest_age_seconds": max(0.0, round((now - oldest).total_seconds(), 1)) if oldest else 0.0,
                "workers_alive": sum(1 for w in serving if w["alive"]),
                "workers_busy": sum(1 for w in serving if w["alive"] and w["current_job_id"]),
            }
        )
    return found


def redis_memory(r: redis.Redis) -> dict:
    """INFO memory: bytes used against `maxmemory` (0 = no limit) and the eviction policy."""
    info = r.info("memory")
    used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
    return {
        "used_bytes": used,
        "peak_bytes": int(info.get("used_memory_peak", 0)),
        "max_bytes": limit,
        "policy": info.get("maxmemory_policy", "unknown"),
        "used_fraction": round(used / limit, 4) if limit else None,
    }


def http_counts(r: redis.Redis, today: date | None = None) -> list[dict]:
    """Requests, 5xx and 429 counts, today so far and yesterday (UTC), summed over every web
    process; each process adds its totals every STATS_FLUSH_SECONDS, so today lags by that."""
    with contextlib.suppress(redis.RedisError):  # a full Redis refuses the write; reading still works
        daily_stats.flush_daily_stats(r)
    today = today or _now().date()
    rows = []
    for label, day in (("today", today), ("yesterday", today - timedelta(days=1))):
        stats = daily_stats.day_stats(r, day)
        rows.append(
            {
                "label": label,
                "day": day,
                "requests": stats["requests"],
                "errors": stats["errors"],
                "rate_limited": stats["rate_limited"],
                "refusals": stats["refusals"],
            }
        )
    return rows


# -- the database: jobs, cached ---------------------------------------------------------------------


def _duration_seconds(dialect: str):
    if dialect == "postgresql":
        return sa.extract("epoch", Job.finished_at - Job.started_at)
    # SQLite (the embedded default) has no interval type: day fractions between the two instants.
    return (sa.func.julianday(Job.finished_at) - sa.func.julianday(Job.started_at)) * 86400.0


def p95_duration(session, since: datetime) -> float | None:
    """Nearest-rank p95 of finished_at - started_at over API jobs that ran to an end (succeeded
    or failed) since `since`; canceled jobs are left out, their duration is the caller's choice."""
    dialect = session.get_bind().dialect.name
    duration = _duration_seconds(dialect)
    ran = (Job.status.in_(("succeeded", "failed")), Job.finished_at >= since, Job.started_at.is_not(None))
    if dialect == "postgresql":
        value = session.scalar(sa.select(sa.func.percentile_disc(0.95).within_group(duration)).where(*ran))
        return None if value is None else round(float(value), 3)
    n = session.scalar(sa.select(sa.func.count()).select_from(Job).where(*ran))
    if not n:
        return None
    rank = math.ceil(0.95 * n) - 1
    value = session.scalar(sa.select(duration).where(*ran).order_by(duration).offset(rank).limit(1))
    return round(float(value), 3)


def compute_db_figures(session, now: datetime | None = None) -> dict:
    """API jobs by state (all of them), and over the last 24 h: finished by status, rates, p95.

    Its cost does not grow with the jobs stored: the states are counted by the database as jobs
    change, and the 24 h figures read the window's range of the (finished_at, status) index."""
    now = now or _now()
    since = now - WINDOW
    # Kept by triggers on `jobs` (JobStateCount): a few rows, however many jobs are stored.
    by_state = dict(
        session.execute(
            sa.select(JobStateCount.status, sa.func.sum(JobStateCount.n)).group_by(JobStateCount.status)
        ).all()
    )
    finished = dict(
        session.execute(
            sa.select(Job.status, sa.func.count())
            .where(Job.status.in_(FINISHED_STATES), Job.finished_at >= since)
            .group_by(Job.status)
        ).all()
    )
    counts = {state: int(finished.get(state, 0)) for state in FINISHED_STATES}
    total = sum(counts.values())
    return {
        "computed_at": now.isoformat(),
        "jobs_by_state": {state: int(by_state.get(state, 0)) for state in JOB_STATES},
        "last_24h": counts
        | {
            "finished": total,
            "success_rate": round(counts["succeeded"] / total, 4) if total else None,
            "failure_rate": round(counts["failed"] / total, 4) if total else None,
            "p95_duration_seconds": p95_duration(session, since),
        },
    }


class DbFiguresCache:
    """compute_db_figures at most once per `seconds` per process, and (with Redis) once per
    `seconds` across processes: the process that takes a short Redis lock recomputes, the others
    serve the previous figures meanwhile."""

    def __init__(self):
        self._lock = threading.Lock()
        self._local: tuple[float, dict] | None = None  # (monotonic time, figures)
        self.computed = 0  # how many times this process ran the queries (tests, logs)

    def clear(self) -> None:
        with self._lock:
            self._local = None

    def get(self, r: redis.Redis | None, session, seconds: float = DB_CACHE_SECONDS) -> dict:
        if seconds <= 0:
            return self._compute(r, session, seconds)
        with self._lock:
            if self._local and time.monotonic() - self._local[0] < seconds:
                return self._local[1]
        shared = self._from_redis(r, seconds) if r is not None else None
        if shared is not None and (shared[1] or not self._take_lock(r, seconds)):
            return self._keep(shared[0])  # fresh, or stale while another process recomputes
        return self._keep(self._compute(r, session, seconds))

    def _compute(self, r: redis.Redis | None, session, seconds: float) -> dict:
        figures = compute_db_figures(session)
        self.computed += 1
        if r is not None and seconds > 0:
            try:
                # Kept well past freshness, so there are stale figures to serve during a recomputation.
                r.set(CACHE_KEY, json.dumps(figures), ex=max(60, math.ceil(seconds * 10)))
                r.delete(LOCK_KEY)
            except redis.RedisError:
                log.info("could not cache the ops figures in Redis; kept in this process")
        return figures

    def _keep(self, figures: dict) -> dict:
        with self._lock:
            self._local = (time.monotonic(), figures)
        return figures

    def _from_redis(self, r: redis.Redis, seconds: float) -> tuple[dict, bool] | None:
        """(figures, fresh) from Redis, or None."""
        try:
            raw = r.get(CACHE_KEY)
        except redis.RedisError:
            return None
        if raw is None:
            return None
        figures = json.loads(raw)
        age = (_now() - datetime.fromisoformat(figures["computed_at"])).total_seconds()
        return figures, age < seconds

    @staticmethod
    def _take_lock(r: redis.Redis | None, seconds: float) -> bool:
        if r is None:
            return True
        try:
            return bool(r.set(LOCK_KEY, "1", nx=True, ex=max(1, math.ceil(seconds))))
        except redis.RedisError:
            return True


DB_FIGURES = DbFiguresCache()


def db_figures(r: redis.Redis | None, session, seconds: float = DB_CACHE_SECONDS) -> dict:
    """The cached database figures (see DbFiguresCache)."""
    return DB_FIGURES.get(r, session, seconds)


def health_history(session, days: int = 30, today: date | None = None) -> list[dict]:
    """The nightly health log's entries of the last `days` days, oldest first."""
    today = today or _now().date()
    first = today - timedelta(days=days)
    entries = session.scalars(
        sa.select(HealthLogEntry).where(HealthLogEntry.day >= first).order_by(HealthLogEntry.day)
    ).all()
    return [entry.figures | {"day": entry.day.isoformat()} for entry in entries]


# -- everything at once -----------------------------------------------------------------------------


def _section(errors: dict, name: str, read, session=None):
    try:
        return read()
    except (redis.RedisError, sa.exc.SQLAlchemyError, OSError) as err:
        log.warning("ops status: cannot read %s: %s", name, err)
        errors[name] = f"{type(err).__name__}: {err}"[:300]
        if session is not None and isinstance(err, sa.exc.SQLAlchemyError):
            session.rollback()
        return None


REDIS_SECTIONS = ("workers", "queues", "redis_memory", "http")


def snapshot(r: redis.Redis, session, cache_seconds: float = DB_CACHE_SECONDS, history: bool = True) -> dict:
    """Every figure the operator's view shows. A section that cannot be read is None and named in
    `errors`, so a Redis or database outage still shows what can be shown; when Redis does not
    answer a PING its sections are skipped rather than each waiting for its own timeout."""
    errors: dict[str, str] = {}
    now = _now()
    result: dict = {"now": now, "redis_up": _section(errors, "redis", r.ping) is not None}
    if result["redis_up"]:
        worker_list = _section(errors, "workers", lambda: workers(r, now))
        result["workers"] = worker_list
        result["queues"] = _section(errors, "queues", lambda: queues(r, worker_list or [], now))
        result["redis_memory"] = _section(errors, "redis_memory", lambda: redis_memory(r))
        result["http"] = _section(errors, "http", lambda: http_counts(r, now.date()))
    else:
        result.update(dict.fromkeys(REDIS_SECTIONS))
    shared = r if result["redis_up"] else None
    result["jobs"] = _section(errors, "jobs", lambda: db_figures(shared, session, cache_seconds), session)
    if history:
        result["history"] = _section(errors, "history", lambda: health_history(session, today=now.date()), session)
    result["errors"] = errors
    return result


def notion_sync_status(r: redis.Redis) -> dict:
    """The latest Notion sync job as the fragment shows it (RQ status and job.meta progress)."""
    status = {"job_id": None, "state": "never", "progress": {}, "error": None}
    try:
        job_id = r.get(periodic.last_job_key("notion-sync"))
        if job_id is None:
            return status
        job = RQJob.fetch(job_id.decode(), connection=r)
    except NoSuchJobError:
        return status
    except redis.RedisError:
        return status | {"state": "unknown", "error": "Redis does not answer: the sync's state cannot be read."}
    progress = job.get_meta(refresh=True).get("progress", {})
    state = job.get_status(refresh=False)
    status.update(job_id=job.id, state=str(state.value if state else "unknown"), progress=progress)
    total = progress.get("total") or 0
    status["percent"] = int(100 * progress.get("done", 0) / total) if total else (100 if state == "finished" else 0)
    status["running"] = status["state"] in ("queued", "started", "deferred", "scheduled")
    if status["state"] == "failed":
        status["error"] = "The last sync failed; it resumes where it stopped when run again."
    return status
