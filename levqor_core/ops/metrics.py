"""Prometheus metrics (`GET /metrics`).

Per request the ASGI middleware (`levqor_core.web.request_metrics`) only touches in-process
state: prometheus_client counters and a histogram (mmap files shared by gunicorn's workers when
PROMETHEUS_MULTIPROC_DIR is set; see gunicorn.conf.py) and the daily totals of
`levqor_core.ops.daily_stats`, so the hot path never makes an extra Redis round trip. Jobs,
workers, queues and Redis memory are read through `levqor_core.ops.status` when /metrics is
scraped (the database figures cached for a few seconds, so scraping costs no query most of the
time).
"""

import logging
import os
from datetime import UTC, datetime

import redis
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from levqor_core.ops import status as ops_status
from levqor_core.ops.daily_stats import JOB_RUNS, LATENCY_BUCKETS

# Read through this module by the request middleware (STATS) and test_ops_view (day_key).
from levqor_core.ops.daily_stats import STATS as STATS
from levqor_core.ops.daily_stats import day_key as day_key

log = logging.getLogger(__name__)

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


# -- /metrics --------------------------------------------------------------------------------------


class _StateCollector:
    """Gauges read at scrape time from levqor_core.ops.status, the same figures as /developer/ops: RQ
    workers, queues and registries and Redis memory (live), API jobs (cached, so a scrape's
    database cost is bounded), background job runs. What cannot be read is left out, and
    `levqor_up` says which side was down."""

    def __init__(self, r: redis.Redis, session, cache_seconds: float):
        self.redis, self.session, self.cache_seconds = r, session, cache_seconds

    def collect(self):
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
