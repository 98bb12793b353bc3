"""Prometheus metrics (`GET /metrics`) and the daily request figures behind the health log.

Per request the ASGI middleware only touches in-process state: prometheus_client counters and
a histogram (mmap files shared by gunicorn's workers when PROMETHEUS_MULTIPROC_DIR is set; see
gunicorn.conf.py) and a small dict of today's totals. A background thread adds those totals to
a Redis hash every STATS_FLUSH_SECONDS, so the hot path never makes an extra Redis round trip.
Jobs by state and queue depth are read from the database and RQ when /metrics is scraped.
"""

import json
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


# -- the ASGI middleware -------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts and times every HTTP request; reads the problem type of 429 answers."""

    def __init__(self, app, redis_client: redis.Redis | None = None, flush_seconds: float = 10.0):
        self.app = app
        self.redis = redis_client
        self.flush_seconds = flush_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.redis is not None:
            STATS.start(self.redis, self.flush_seconds)
        # Connexion's router records the operation in a shallow copy of the scope: sharing the
        # extensions dict lets us read it afterwards.
        scope.setdefault("extensions", {})
        started = time.perf_counter()
        status = 500
        refusal: list[bytes] | None = None

        async def observe(message):
            nonlocal status, refusal
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 429:
                    refusal = []
            elif refusal is not None and message["type"] == "http.response.body":
                refusal.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            seconds = time.perf_counter() - started
            operation = _operation(scope)
            refused = _problem_slug(b"".join(refusal)) if refusal is not None else None
            label = str(status)
            method = scope.get("method", "")
            REQUESTS.labels(operation, method if method in KNOWN_METHODS else "other", label).inc()
            LATENCY.labels(operation, label).observe(seconds)
            if refused is not None:
                REFUSALS.labels(refused).inc()
            STATS.add(status, seconds, refused)


def _operation(scope) -> str:
    routing = (scope.get("extensions") or {}).get("connexion_routing") or {}
    if routing.get("operation_id"):
        # Connexion reports "handlers.<module>.<operationId>"; the spec's operationId is the label.
        return routing["operation_id"].rsplit(".", 1)[-1]
    path = scope.get("path", "")
    if path.startswith("/api/"):
        return "api_other"  # docs, spec, or no such operation: bounded label values
    if path == "/metrics":
        return "metrics"
    if path.startswith("/static/"):
        return "static"
    return "portal"


def _problem_slug(body: bytes) -> str:
    try:
        type_ = json.loads(body).get("type") or ""
    except (ValueError, AttributeError):
        return "unknown"
    return type_.rstrip("/").rsplit("/", 1)[-1] or "unknown"


# -- /metrics --------------------------------------------------------------------------------------


class _StateCollector:
    """Gauges read at scrape time: API jobs by state, RQ registries and queue depth, job runs."""

    def __init__(self, r: redis.Redis, queue_name: str):
        self.redis, self.queue_name = r, queue_name

    def collect(self):
        import sqlalchemy as sa
        from rq import Queue
        from rq.registry import (
            DeferredJobRegistry,
            FailedJobRegistry,
            FinishedJobRegistry,
            ScheduledJobRegistry,
            StartedJobRegistry,
        )

        from .extensions import db
        from .models import Job

        api_jobs = GaugeMetricFamily("levqor_api_jobs", "API jobs by state.", labels=["state"])
        counts = dict(db.session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all())
        for state in ("queued", "running", "succeeded", "failed", "canceled"):
            api_jobs.add_metric([state], counts.get(state, 0))
        yield api_jobs

        q = Queue(self.queue_name, connection=self.redis)
        depth = GaugeMetricFamily("levqor_queue_depth", "Jobs waiting in the RQ queue.", labels=["queue"])
        depth.add_metric([self.queue_name], q.count)
        yield depth
        rq_jobs = GaugeMetricFamily("levqor_rq_jobs", "RQ jobs by state.", labels=["queue", "state"])
        rq_jobs.add_metric([self.queue_name, "queued"], q.count)
        for state, registry in (
            ("started", StartedJobRegistry),
            ("deferred", DeferredJobRegistry),
            ("scheduled", ScheduledJobRegistry),
            ("finished", FinishedJobRegistry),
            ("failed", FailedJobRegistry),
        ):
            rq_jobs.add_metric([self.queue_name, state], registry(queue=q).count)
        yield rq_jobs

        runs = CounterMetricFamily(
            "levqor_background_job_runs", "Background job runs by outcome.", labels=["job", "outcome"]
        )
        for field, n in self.redis.hgetall(JOB_RUNS).items():
            job, outcome = field.decode().split("|", 1)
            runs.add_metric([job, outcome], int(n))
        yield runs


class _ProcessCollector:
    """This process's own metrics when there is no multiprocess directory (development, tests)."""

    def collect(self):
        from prometheus_client import REGISTRY

        yield from REGISTRY.collect()


def render(r: redis.Redis, queue_name: str) -> bytes:
    """The Prometheus text exposition of every metric."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessCollector())
    registry.register(_StateCollector(r, queue_name))
    return generate_latest(registry)
