"""The next steps a new developer takes, each ticked from what the account has done (the portal's
Overview checklist): confirm the email, create a key, call the sandbox, submit a job, add a webhook
endpoint, make a live call.

Every fact is read from a durable record (the keys, jobs and endpoints tables, the persisted
usage, the request log) or from today's Redis counters, so a step done a minute ago is ticked now
and one done last month stays ticked."""

from dataclasses import dataclass
from datetime import datetime

import redis
import sqlalchemy as sa

from levqor_core.apijobs.models import Job
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering import counters
from levqor_core.metering.models import UsageDaily
from levqor_core.requestlog import queries as request_log
from levqor_core.webhooks.models import WebhookEndpoint


@dataclass(frozen=True)
class Step:
    id: str
    done: bool


def _exists(query) -> bool:
    return db.session.scalar(query.limit(1)) is not None


def _sandbox_calls_today(r: redis.Redis, account_id: int, key_ids: list[str], now: datetime) -> int:
    if not key_ids:
        return 0
    try:
        return sum(int(v or 0) for v in r.mget([counters.sandbox_key(account_id, k, now.date()) for k in key_ids]))
    except redis.RedisError:
        return 0  # the persisted figures and the request log still answer


def steps(r: redis.Redis, account, now: datetime, calls_this_period: int = 0) -> list[Step]:
    """The checklist in its order; `calls_this_period` is the live usage the caller already read."""
    key_ids = list(db.session.scalars(sa.select(ApiKey.id).where(ApiKey.account_id == account.id)))
    persisted = db.session.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(UsageDaily.calls), 0),
            sa.func.coalesce(sa.func.sum(UsageDaily.sandbox_calls), 0),
        ).where(UsageDaily.account_id == account.id)
    ).one()
    sandbox_call = (
        persisted[1] > 0
        or _sandbox_calls_today(r, account.id, key_ids, now) > 0
        or request_log.has_call(account.id, sandbox=True)
    )
    job = _exists(sa.select(Job.seq).where(Job.account_id == account.id)) or request_log.has_call(
        account.id, sandbox=True, job_created=True
    )
    live_call = persisted[0] > 0 or calls_this_period > 0 or request_log.has_call(account.id, sandbox=False)
    return [
        Step("confirm-email", account.confirmed_at is not None),
        Step("create-key", bool(key_ids)),
        Step("sandbox-call", sandbox_call),
        Step("first-job", job),
        Step(
            "webhook-endpoint", _exists(sa.select(WebhookEndpoint.id).where(WebhookEndpoint.account_id == account.id))
        ),
        Step("live-call", live_call),
    ]
