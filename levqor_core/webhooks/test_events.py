"""Test events (`levqor trigger EVENT`): a realistic payload of each type, emitted through the same
path as real events (events.emit), so endpoints and listening sessions get them signed as usual.
Every payload is made up (a job, a key, usage figures) and says so with `test: true`."""

import secrets as token
from datetime import UTC, datetime, timedelta

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.webhooks import events, service

TEXT = "Hello from levqor trigger"


def _job(status: str, now: datetime) -> dict:
    started = now - timedelta(milliseconds=500)
    return {
        "id": f"job_test_{token.token_hex(8)}",
        "workflow": "text-stats",
        "status": status,
        "input": {"text": TEXT},
        "result": {"characters": len(TEXT), "words": len(TEXT.split())} if status == "succeeded" else None,
        "error": {"type": "workflow_failed", "message": "A test failure: levqor trigger job.failed."}
        if status == "failed"
        else None,
        "created_at": (started - timedelta(milliseconds=20)).isoformat(),
        "started_at": started.isoformat(),
        "finished_at": now.isoformat(),
    }


def _usage(account: Account, percent: int, now: datetime) -> dict:
    quota = tiers.get(account.tier).monthly_quota or 1_000_000
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return {
        "calls_used": quota * percent // 100,
        "quota": quota,
        "threshold_percent": percent,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
    }


def _key(account: Account, event_type: str, now: datetime) -> dict:
    key = {
        "id": f"key_test_{token.token_hex(8)}",
        "hint": "lvq_…test",
        "tier": account.tier,
        "status": {"key.rolled": "expiring"}.get(event_type, "revoked"),
        "created_at": (now - timedelta(days=30)).isoformat(),
        "expires_at": (now + timedelta(hours=24)).isoformat() if event_type == "key.rolled" else None,
    }
    if event_type == "key.rolled":
        key["emergency"] = False
    if event_type == "key.leaked":
        key["leak_url"] = "https://github.com/octocat/hello-world/blob/main/config.py#L3"
    return key


def sample(account: Account, event_type: str, now: datetime | None = None) -> dict:
    """A made-up `data` for an event of this type, shaped as the real one's."""
    now = now or datetime.now(UTC)
    if event_type in service.JOB_EVENTS:
        data = _job(event_type.removeprefix("job."), now)
    elif event_type in service.QUOTA_EVENTS:
        data = _usage(account, 80 if event_type == "quota.warning" else 100, now)
    else:
        data = _key(account, event_type, now)
    return data | {"test": True}


def trigger(account: Account, event_type: str, *, sandbox: bool) -> dict:
    """Emit a test event of this type for the account; the event as endpoints get it."""
    now = datetime.now(UTC)
    data = sample(account, event_type, now)
    events.emit(account.id, event_type, data, sandbox=sandbox, at=now)
    return {"type": event_type, "timestamp": now.isoformat(), "data": data | {"sandbox": sandbox}}
