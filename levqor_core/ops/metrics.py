"""Prometheus metrics (`GET /metrics`) and the daily request figures behind the health log.

Per request the ASGI middleware (`levqor_core.web.request_metrics`) only touches in-process
state: prometheus_client counters and a histogram (mmap files shared by gunicorn's workers when
PROMETHEUS_MULTIPROC_DIR is set; see gunicorn.conf.py) and a small dict of today's totals. A
background thread adds those totals to a Redis hash every STATS_FLUSH_SECONDS, so the hot path
never makes an extra Redis round trip. Jobs, workers, queues and Redis memory are read through
`levqor_core.ops.status` when /metrics is scraped (the database figures cached for a few
seconds, so scraping costs no query most of the time).
"""

import logging
import os
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime

import redis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

# Upper bounds in seconds; shared by the Prometheus histogram and the daily p95 estimate.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATS_TTL = 40 * 86400
JOB_RUNS = "lvq:stats:job-runs"
# A client may send any method; anything else is counted as "other" so label values stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = PromCounter(
    "levqor_http_requests", "HTTP requests by operation, method and status.", ["operation", "method", "status"]
)
LATENCY = Histogram(
    "levqor_http_request_duration_seconds",
    "Request latency by operation and status.",
    ["operation", "status"],
    buckets=LATENCY_BUCKETS,
)
REFUSALS = PromCounter("levqor_limit_refusals", "Requests refused with 429, by problem type.", ["type"])


def day_key(day: date) -> str:
    return f"lvq:stats:{day.isoformat()}"


class DailyStats:
    """Today's totals in this process, added to Redis in one pipeline per flush."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._thread: threading.Thread | None = None

    def add(self, status: int, seconds: float, refused_type: str | None) -> None:
        bucket = next((b for b in LATENCY_BUCKETS if seconds <= b), "inf")
        day = datetime.now(UTC).date().isoformat()
        with self._lock:
            c = self._counts
            c[(day, "requests")] += 1
            c[(day, f"lat:{bucket}")] += 1
            if status >= 500:
                c[(day, "errors")] += 1
            if status == 429:
                c[(day, "rate_limited")] += 1
                c[(day, f"refused:{refused_type or 'unknown'}")] += 1

    def flush(self, r: redis.Redis) -> int:
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return 0
        try:
            pipe = r.pipeline(transaction=False)
            for (day, field), n in counts.items():
                pipe.hincrby(day_key(date.fromisoformat(day)), field, n)
            for day in {d for d, _ in counts}:
                pipe.expire(day_key(date.fromisoformat(day)), STATS_TTL)
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._counts.update(counts)  # kept for the next flush
            raise
        return sum(n for (_, f), n in counts.items() if f == "requests")

    def start(self, r: redis.Redis, seconds: float) -> None:
        if self._thread is not None or seconds <= 0:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, args=(r, seconds), name="stats-flush", daemon=True)
        self._thread.start()

    def _loop(self, r: redis.Redis, seconds: float) -> None:
        while True:
            time.sleep(seconds)
            try:
                self.flush(r)
            except Exception:
                log.warning("could not flush request stats to redis; will retry", exc_info=True)


STATS = DailyStats()


def flush_daily_stats(r: redis.Redis) -> int:
    """Add this process's pending request totals to Redis now; returns requests flushed."""
    return STATS.flush(r)


def day_stats(r: redis.Redis, day: date) -> dict:
    """Requests, 5xx errors, 429s, refusals by type and the p95 latency (ms) of one UTC day."""
    raw = {k.decode(): int(v) for k, v in r.hgetall(day_key(day)).items()}
    buckets = [(b, raw.get(f"lat:{b}", 0)) for b in LATENCY_BUCKETS] + [(float("inf"), raw.get("lat:inf", 0))]
    return {
        "requests": raw.get("requests", 0),
        "errors": raw.get("errors", 0),
        "rate_limited": raw.get("rate_limited", 0),
        "refusals": {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("refused:")},
        "p95_latency_ms": quantile_ms(buckets, 0.95),
    }


def quantile_ms(buckets: list[tuple[float, int]], q: float) -> float | None:
    """The q-quantile from bucket counts, interpolated inside its bucket like histogram_quantile."""
    total = sum(n for _, n in buckets)
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for upper, n in buckets:
        if n and seen + n >= rank:
            if upper == float("inf"):
                return round(lower * 1000, 1)
            return round((lower + (upper - lower) * (rank - seen) / n) * 1000, 1)
        seen += n
        lower = upper
    return round(lower * 1000, 1)


def record_job_run(r: redis.Redis, name: str, outcome: str) -> None:
    """Count a background job's run (succeeded | failed | skipped) in total and for today."""
    try:
        pipe = r.pipeline(transaction=False)
        pipe.hincrby(JOB_RUNS, f"{name}|{outcome}", 1)
        if outcome == "failed":
            key = day_key(datetime.now(UTC).date())
            pipe.hincrby(key, "job_failures", 1)
            pipe.expire(key, STATS_TTL)
        pipe.execute()
    except redis.RedisError:
        log.warning("could not record the outcome of job %s", name)


# -- /metrics --------------------------------------------------------------------------------------


class _StateCollector:
    """Gauges read at scrape time from levqor_core.ops.status, the same figures as /developer/ops: RQ
    workers, queues and registries and Redis memory (live), API jobs (cached, so a scrape's
    database cost is bounded), background job runs. What cannot be read is left out, and
    `levqor_up` says which side was down."""

    def __init__(self, r: redis.Redis, session, cache_seconds: float):
        self.redis, self.session, self.cache_seconds = r, session, cache_seconds

    def collect(self):
        from levqor_core.ops import status as ops_status

        snap = ops_status.snapshot(self.redis, self.session, self.cache_seconds, history=False)
        up = GaugeMetricFamily("levqor_up", "1 when the component answered this scrape.", labels=["component"])
        up.add_metric(["redis"], 1 if snap["redis_up"] else 0)
        up.add_metric(["database"], 0 if "jobs" in snap["errors"] else 1)
        yield up
        yield from _job_families(snap["jobs"])
        if snap["queues"] is not None:
            yield from _queue_families(snap["queues"])
        if snap["redis_memory"] is not None:
            mem = snap["redis_memory"]
            yield GaugeMetricFamily("levqor_redis_memory_used_bytes", "Redis used_memory.", value=mem["used_bytes"])
            yield GaugeMetricFamily(
                "levqor_redis_memory_max_bytes", "Redis maxmemory (0 = no limit).", value=mem["max_bytes"]
            )
        if snap["redis_up"]:
            try:
                raw = self.redis.hgetall(JOB_RUNS)
            except redis.RedisError:
                return
            runs = CounterMetricFamily(
                "levqor_background_job_runs", "Background job runs by outcome.", labels=["job", "outcome"]
            )
            for field, n in raw.items():
                job, outcome = field.decode().split("|", 1)
                runs.add_metric([job, outcome], int(n))
            yield runs


def _job_families(jobs: dict | None):
    if jobs is None:
        return
    api_jobs = GaugeMetricFamily("levqor_api_jobs", "API jobs by state.", labels=["state"])
    for state, n in jobs["jobs_by_state"].items():
        api_jobs.add_metric([state], n)
    yield api_jobs
    day = jobs["last_24h"]
    finished = GaugeMetricFamily(
        "levqor_api_jobs_finished_24h", "API jobs finished in the last 24 h, by status.", labels=["status"]
    )
    for status in ("succeeded", "failed", "canceled"):
        finished.add_metric([status], day[status])
    yield finished
    if day["p95_duration_seconds"] is not None:
        yield GaugeMetricFamily(
            "levqor_api_job_duration_p95_seconds",
            "p95 of finished_at - started_at over API jobs that succeeded or failed in the last 24 h.",
            value=day["p95_duration_seconds"],
        )
    age = (datetime.now(UTC) - datetime.fromisoformat(jobs["computed_at"])).total_seconds()
    yield GaugeMetricFamily(
        "levqor_api_jobs_figures_age_seconds", "How old the cached API job figures are.", value=round(age, 3)
    )


def _queue_families(queues: list[dict]):
    depth = GaugeMetricFamily("levqor_queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"])
    oldest = GaugeMetricFamily(
        "levqor_queue_oldest_job_age_seconds", "Age of the oldest waiting job (0 when none).", labels=["queue"]
    )
    alive = GaugeMetricFamily("levqor_rq_workers_alive", "RQ workers alive serving the queue.", labels=["queue"])
    busy = GaugeMetricFamily("levqor_rq_workers_busy", "Of those, workers running a job.", labels=["queue"])
    rq_jobs = GaugeMetricFamily("levqor_rq_jobs", "RQ jobs by state.", labels=["queue", "state"])
    for q in queues:
        depth.add_metric([q["name"]], q["depth"])
        oldest.add_metric([q["name"]], q["oldest_age_seconds"])
        alive.add_metric([q["name"]], q["workers_alive"])
        busy.add_metric([q["name"]], q["workers_busy"])
        for state in ("queued", "started", "deferred", "scheduled", "finished", "failed"):
            rq_jobs.add_metric([q["name"], state], q["depth"] if state == "queued" else q[state])
    yield from (depth, oldest, alive, busy, rq_jobs)


class _ProcessCollector:
    """This process's own metrics when there is no multiprocess directory (development, tests)."""

    def collect(self):
        from prometheus_client import REGISTRY

        yield from REGISTRY.collect()


def render(r: redis.Redis, session, cache_seconds: float) -> bytes:
    """The Prometheus text exposition of every metric."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCollector())
    registry.register(_StateCollector(r, session, cache_seconds))
    return generate_latest(registry)
