"""The nightly System Health Log: one summary entry per UTC day, kept locally and in Notion.

Figures: requests, 5xx errors, 429 refusals, keys created, active keys, p95 latency and job
failures (API jobs that failed plus background job runs that raised). The entry is stored in
`health_log_entries` first and written to Notion once; a rerun updates the same Notion row.
"""

import logging
from collections.abc import Callable
from datetime import UTC, date, datetime

import redis
import sqlalchemy as sa

from levqor_core.apijobs.models import Job
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering.counters import day_end
from levqor_core.ops import daily_stats
from levqor_core.ops import notion as notion_api
from levqor_core.ops.models import HealthLogEntry

log = logging.getLogger(__name__)

DATABASE_TITLE = "System Health Log"
SCHEMA = {
    "Day": {"title": {}},
    "Date": {"date": {}},
    "Requests": {"number": {"format": "number"}},
    "Errors": {"number": {"format": "number"}},
    "429s": {"number": {"format": "number"}},
    "Keys Created": {"number": {"format": "number"}},
    "Active Keys": {"number": {"format": "number"}},
    "P95 Latency (ms)": {"number": {"format": "number"}},
    "Job Failures": {"number": {"format": "number"}},
}


def figures(r: redis.Redis, day: date) -> dict:
    """The day's summary; request figures come from the per-process totals flushed to Redis."""
    daily_stats.flush_daily_stats(r)
    stats = daily_stats.day_stats(r, day)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = day_end(day)
    keys_created = db.session.scalar(
        sa.select(sa.func.count()).select_from(ApiKey).where(ApiKey.created_at >= start, ApiKey.created_at < end)
    )
    active_keys = db.session.scalar(
        sa.select(sa.func.count()).select_from(ApiKey).where(ApiKey.status.in_(("active", "expiring")))
    )
    api_job_failures = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Job)
        .where(Job.status == "failed", Job.finished_at >= start, Job.finished_at < end)
    )
    background_failures = int(r.hget(daily_stats.day_key(day), "job_failures") or 0)
    return {
        "day": day.isoformat(),
        "requests": stats["requests"],
        "errors": stats["errors"],
        "rate_limited": stats["rate_limited"],
        "refusals": stats["refusals"],
        "keys_created": int(keys_created),
        "active_keys": int(active_keys),
        "p95_latency_ms": stats["p95_latency_ms"],
        "job_failures": int(api_job_failures) + background_failures,
    }


def _properties(f: dict) -> dict:
    return {
        "Day": notion_api.title(f["day"]),
        "Date": notion_api.date_value(date.fromisoformat(f["day"])),
        "Requests": notion_api.number(f["requests"]),
        "Errors": notion_api.number(f["errors"]),
        "429s": notion_api.number(f["rate_limited"]),
        "Keys Created": notion_api.number(f["keys_created"]),
        "Active Keys": notion_api.number(f["active_keys"]),
        "P95 Latency (ms)": notion_api.number(f["p95_latency_ms"]),
        "Job Failures": notion_api.number(f["job_failures"]),
    }


def run(r: redis.Redis, day: date, progress: Callable | None = None) -> dict:
    """Summarise `day`, store it, and write it to the Notion System Health Log."""
    progress = progress or (lambda done, total, counts: None)
    f = figures(r, day)
    entry = db.session.get(HealthLogEntry, day) or HealthLogEntry(day=day)
    entry.figures = f
    db.session.add(entry)
    db.session.commit()
    progress(1, 2, {"phase": "writing to Notion"})
    notion = notion_api.from_app()
    if notion is None:
        log.info("health log for %s kept locally only: %s", day, f)
        return f | {"notion": "skipped (not configured)"}
    ds_id = notion.ensure_database(DATABASE_TITLE, SCHEMA)
    props = _properties(f)
    if entry.notion_page_id is None:
        found = notion.find_row(ds_id, "Day", f["day"])
        if found:
            entry.notion_page_id = found["id"]
    if entry.notion_page_id:
        notion.update_row(entry.notion_page_id, props)
    else:
        entry.notion_page_id = notion.create_row(ds_id, props, "Day")["id"]
    db.session.commit()
    progress(2, 2, {"phase": "done"})
    return f | {"notion_page_id": entry.notion_page_id}
