"""The periodic maintenance jobs: the one table of them (name, what runs, when, and the setting
that changes when), and how they are run, enqueued and counted.

The worker's cron schedule (jobs/schedule.py), its one RQ task for them
(`jobs.tasks.run_periodic`) and the `flask jobs ...` commands are all built from PERIODIC_JOBS
and all come through `run()`, so a job behaves the same wherever it starts. Outcomes are counted
in Redis (a few writes per run, never on the request path) for /metrics and the nightly health log.
"""

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import redis
from flask import current_app

from levqor_core import queue, redis_conn
from levqor_core.ops import daily_stats

log = logging.getLogger(__name__)

Progress = Callable[[int, int, dict], None]
# Dotted, so the core never imports the worker package; the task takes the periodic job's name.
RUN_TASK = "jobs.tasks.run_periodic"
JOB_TIMEOUT = 3600  # seconds; a first Notion sync of many keys can take most of an hour
RESULT_TTL = 7 * 86400
LAST_JOB_TTL = 30 * 86400


def _redis() -> redis.Redis:
    return current_app.extensions["levqor.redis"]


def last_job_key(name: str) -> str:
    return f"lvq:ops:last:{name}"


def _notion_sync(progress: Progress, **_) -> dict:
    from levqor_core.ops import notion, notion_sync

    client = notion.from_app()
    if client is None:
        return {"skipped": "Notion is not configured (NOTION_TOKEN / NOTION_PARENT_PAGE_ID)"}
    result = notion_sync.sync(client, redis_conn.for_limits(), progress, current_app.config["NOTION_SYNC_MAX_REMOVALS"])
    return result.as_dict() | {
        "notion_requests": client.stats["requests"],
        "rate_limited": client.stats["rate_limited"],
    }


def _quota_alerts(progress: Progress, **_) -> dict:
    from levqor_core.ops import alerts

    return alerts.run(redis_conn.for_limits(), progress=progress)


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


def _webhook_sweep(progress: Progress, **_) -> dict:
    from levqor_core.webhooks import dispatch

    return {"queued": dispatch.sweep()}


def _purge_webhook_deliveries(progress: Progress, **_) -> dict:
    from levqor_core.webhooks import delivery

    return {"purged": delivery.purge()}


def _trim_request_log(progress: Progress, **_) -> dict:
    from levqor_core.requestlog import queries

    return {"trimmed": queries.trim_written(current_app.extensions["levqor.redis"])}


def _purge_request_log(progress: Progress, **_) -> dict:
    from levqor_core.requestlog import queries

    return {"purged": queries.purge(datetime.now(UTC))}


@dataclass(frozen=True)
class PeriodicJob:
    """One periodic maintenance job. `cron_setting` names the environment variable whose value
    (a UTC cron expression) replaces `default_cron`; set empty, it takes the job off the schedule."""

    name: str
    runner: Callable[..., dict]
    default_cron: str
    cron_setting: str

    def cron(self, environ: Mapping[str, str] = os.environ) -> str:
        """When the worker runs the job ('' when it does not)."""
        return environ.get(self.cron_setting, self.default_cron)


PERIODIC_JOBS: dict[str, PeriodicJob] = {
    job.name: job
    for job in (
        PeriodicJob("notion-sync", _notion_sync, "15 2 * * *", "JOBS_NOTION_SYNC_CRON"),
        PeriodicJob("quota-alerts", _quota_alerts, "*/10 * * * *", "JOBS_QUOTA_ALERTS_CRON"),
        PeriodicJob("health-log", _health_log, "5 0 * * *", "JOBS_HEALTH_LOG_CRON"),
        PeriodicJob("requeue-jobs", _requeue_jobs, "* * * * *", "JOBS_REQUEUE_CRON"),
        PeriodicJob("billing-downgrade", _billing_downgrade, "30 0 * * *", "JOBS_BILLING_DOWNGRADE_CRON"),
        PeriodicJob("purge-jobs", _purge_jobs, "45 0 * * *", "JOBS_PURGE_CRON"),
        # Deliveries whose queued attempt Redis lost (a restart, a full queue) are queued again.
        PeriodicJob("webhook-sweep", _webhook_sweep, "* * * * *", "JOBS_WEBHOOK_SWEEP_CRON"),
        PeriodicJob("purge-webhook-deliveries", _purge_webhook_deliveries, "50 0 * * *", "JOBS_WEBHOOK_PURGE_CRON"),
        # The request log's per-account cap, for the accounts written for in the last minute.
        PeriodicJob("trim-request-log", _trim_request_log, "* * * * *", "JOBS_REQUEST_LOG_TRIM_CRON"),
        # The request log's 7-day window.
        PeriodicJob("purge-request-log", _purge_request_log, "55 * * * *", "JOBS_REQUEST_LOG_PURGE_CRON"),
    )
}


def schedule(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Each job's cron expression from the environment ('' for a job taken off the schedule)."""
    return {name: job.cron(environ) for name, job in PERIODIC_JOBS.items()}


def run(name: str, progress: Progress | None = None, **kwargs) -> dict:
    """Run job `name` now, in this process (inside an app context); failures are counted."""
    runner = PERIODIC_JOBS[name].runner
    started = time.monotonic()
    try:
        result = runner(progress or (lambda done, total, counts: None), **kwargs)
    except Exception:
        daily_stats.record_job_run(_redis(), name, "failed")
        raise
    daily_stats.record_job_run(_redis(), name, "skipped" if "skipped" in result else "succeeded")
    log.info("job %s finished in %.1fs: %s", name, time.monotonic() - started, result)
    return result


def enqueue(name: str, **kwargs) -> str:
    """Queue job `name` for the worker; returns the RQ job id."""
    job = queue.get_queue(queue.PERIODIC_QUEUE).enqueue(
        RUN_TASK, args=(name,), kwargs=kwargs, job_timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL
    )
    _redis().set(last_job_key(name), job.id, ex=LAST_JOB_TTL)
    return job.id
