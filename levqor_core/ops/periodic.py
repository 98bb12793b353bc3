"""The periodic background jobs, by name: what they run, how they are enqueued and tracked.

The RQ tasks in jobs/background.py, the cron schedule in jobs/schedule.py and the
`flask jobs run NAME` command all come through `run()`, so a job behaves the same wherever it
starts. Outcomes are counted in Redis (a few writes per run, never on the request path) for
/metrics and the nightly health log.
"""

import logging
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import redis
from flask import current_app

from levqor_core import queue
from levqor_core.ops import metrics

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict], None]
TASKS = {
    "requeue-jobs": "jobs.background.requeue_jobs",
    "billing-downgrade": "jobs.background.billing_downgrade",
    "notion-sync": "jobs.background.notion_sync",
    "quota-alerts": "jobs.background.quota_alerts",
    "health-log": "jobs.background.health_log",
    "purge-jobs": "jobs.background.purge_jobs",
}


def _redis() -> redis.Redis:
    return current_app.extensions["levqor.redis"]


def last_job_key(name: str) -> str:
    return f"lvq:ops:last:{name}"


def _notion_sync(progress: Progress, **_) -> dict:
    from levqor_core.ops import notion, notion_sync

    client = notion.from_app()
    if client is None:
        return {"skipped": "Notion is not configured (NOTION_TOKEN / NOTION_PARENT_PAGE_ID)"}
    result = notion_sync.sync(client, _redis(), progress)
    return result.as_dict() | {
        "notion_requests": client.stats["requests"],
        "rate_limited": client.stats["rate_limited"],
    }


def _quota_alerts(progress: Progress, **_) -> dict:
    from levqor_core.ops import alerts

    return alerts.run(_redis(), progress=progress)


def _health_log(progress: Progress, day: str | None = None, **_) -> dict:
    from levqor_core.ops import health_log

    target = date.fromisoformat(day) if day else datetime.now(UTC).date() - timedelta(days=1)
    return health_log.run(_redis(), target, progress=progress)


def _requeue_jobs(progress: Progress, **_) -> dict:
    from levqor_core.apijobs import jobs

    return {"requeued": jobs.requeue_stranded(datetime.now(UTC))}


def _purge_jobs(progress: Progress, **_) -> dict:
    from levqor_core.apijobs import jobs

    days = current_app.config["JOB_RETENTION_DAYS"]
    return {"purged": jobs.purge_finished(datetime.now(UTC), timedelta(days=days)), "retention_days": days}


def _billing_downgrade(progress: Progress, **_) -> dict:
    from levqor_core.billing import housekeeping

    now = datetime.now(UTC)
    return {"downgraded": housekeeping.downgrade_lapsed(now), "events_pruned": housekeeping.prune_events(now)}


RUNNERS: dict[str, Callable[..., dict]] = {
    "requeue-jobs": _requeue_jobs,
    "billing-downgrade": _billing_downgrade,
    "notion-sync": _notion_sync,
    "quota-alerts": _quota_alerts,
    "health-log": _health_log,
    "purge-jobs": _purge_jobs,
}


def run(name: str, progress: Progress | None = None, **kwargs) -> dict:
    """Run job `name` now, in this process (inside an app context); failures are counted."""
    runner = RUNNERS[name]
    started = time.monotonic()
    try:
        result = runner(progress or (lambda done, total, counts: None), **kwargs)
    except Exception:
        metrics.record_job_run(_redis(), name, "failed")
        raise
    metrics.record_job_run(_redis(), name, "skipped" if "skipped" in result else "succeeded")
    log.info("job %s finished in %.1fs: %s", name, time.monotonic() - started, result)
    return result


def enqueue(name: str, **kwargs) -> str:
    """Queue job `name` for the worker; returns the RQ job id."""
    job = queue.get_queue(queue.PERIODIC_QUEUE).enqueue(
        TASKS[name], kwargs=kwargs, job_timeout=3600, result_ttl=7 * 86400
    )
    _redis().set(last_job_key(name), job.id, ex=30 * 86400)
    return job.id
