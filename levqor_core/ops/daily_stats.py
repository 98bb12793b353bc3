"""The daily request figures: today's totals per process, added to Redis by a background thread
every STATS_FLUSH_SECONDS, read back per UTC day by the ops page, /metrics and the nightly health
log; and the count of periodic job runs by outcome.

Apart from `levqor_core.ops.metrics` (the Prometheus exposition), which reads `levqor_core.ops.status`,
which reads these figures: one module each way would be an import cycle.
"""

import logging
import threading
from collections import Counter
from datetime import UTC, date, datetime

import redis

from levqor_core.periodic_thread import PeriodicThread

log = logging.getLogger(__name__)

# Upper bounds in seconds; shared by the Prometheus histogram and the daily p95 estimate.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STATS_TTL = 40 * 86400
JOB_RUNS = "lvq:stats:job-runs"


def day_key(day: date) -> str:
    return f"lvq:stats:{day.isoformat()}"


class DailyStats:
    """Today's totals in this process, added to Redis in one pipeline per flush."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self.thread: PeriodicThread | None = None

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
        """Add the totals to Redis every `seconds` from now on (once per process)."""
        if self.thread is None:
            with self._lock:
                if self.thread is None:
                    self.thread = PeriodicThread(
                        "stats-flush", seconds, lambda: self.flush(r), last_tick=lambda: self._last_flush(r)
                    )
        self.thread.start()

    def _last_flush(self, r: redis.Redis) -> None:
        try:
            self.flush(r)
        except redis.RedisError as err:
            log.warning("request stats: this process's last totals not flushed at exit: %s", err)


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
