"""What the portal's usage card needs from the database, held in Redis per account.

The card polls every 5 s per open dashboard. Its figures are Redis counters; what the database adds
(the account's key ids, which one is active, the persisted calls of the chart's days) is read with
one statement and held in Redis for the UTC day it was read on, so a warm poll runs no SQL of its
own. Only a key issued, rolled or revoked changes it (the keys core says so:
signals.account_keys_changed), and drops it. The usage flush does not: the chart shows a day's live
counters wherever Redis still has them (their 8 days), and a flush writes a day's row from those
very counters, so a row it writes is never what the card shows.

A drop also counts up the account's generation, and a card is held with the generation read before
its statement: a drop that lands between that statement and the card's write leaves a card no poll
uses. If the drop fails (Redis away at that moment), CARD_SECONDS bounds how long the card may show
the old key ring.
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

import redis
import sqlalchemy as sa

from levqor_core import redis_conn, signals
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering.counters import daily_key, sandbox_key
from levqor_core.metering.models import UsageDaily

log = logging.getLogger(__name__)

HISTORY_DAYS = 30
LIVE_DAYS = 8  # how long gate.lua and the seed keep a key's day counters
CARD_SECONDS = 600


def card_key(account_id: int) -> str:
    # One hash tag per account: the card and its generation are read in one MGET (Redis Cluster).
    return f"lvq:{{a{account_id}}}:card"


def generation_key(account_id: int) -> str:
    return f"lvq:{{a{account_id}}}:card-gen"


@dataclass(frozen=True)
class CardState:
    """The database's part of the card, as of `day` (UTC)."""

    day: date
    active_key_id: str | None
    key_ids: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)  # [key id, ISO day, calls, sandbox calls]
    generation: int = 0  # the account's drops counted when it was read

    def to_json(self) -> str:
        return json.dumps(
            {
                "day": self.day.isoformat(),
                "active": self.active_key_id,
                "keys": self.key_ids,
                "rows": self.rows,
                "gen": self.generation,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> "CardState":
        data = json.loads(raw)
        return cls(date.fromisoformat(data["day"]), data["active"], data["keys"], data["rows"], data["gen"])


def from_database(account_id: int, today: date) -> CardState:
    """One statement: every key of the account, each with its persisted rows of the chart's days
    (the primary key (key_id, day) bounds it by keys × days, whatever the account's history)."""
    first = today - timedelta(days=HISTORY_DAYS - 1)
    found = db.session.execute(
        sa.select(ApiKey.id, ApiKey.status, UsageDaily.day, UsageDaily.calls, UsageDaily.sandbox_calls)
        .outerjoin(UsageDaily, sa.and_(UsageDaily.key_id == ApiKey.id, UsageDaily.day >= first))
        .where(ApiKey.account_id == account_id)
    ).all()
    return CardState(
        today,
        next((row.id for row in found if row.status == "active"), None),
        sorted({row.id for row in found}),
        [[row.id, row.day.isoformat(), row.calls, row.sandbox_calls] for row in found if row.day is not None],
    )


def state(r: redis.Redis, account_id: int, today: date) -> CardState:
    """The card's database part: from Redis when held for today at the current generation, else
    read and held (RedisError when Redis is away: the caller reads from_database instead)."""
    raw, generation = r.mget(card_key(account_id), generation_key(account_id))
    generation = int(generation or 0)
    if raw is not None:
        held = CardState.from_json(raw)
        if held.day == today and held.generation == generation:
            return held
    fresh = replace(from_database(account_id, today), generation=generation)
    r.set(card_key(account_id), fresh.to_json(), ex=CARD_SECONDS)
    return fresh


def daily_history(r: redis.Redis | None, account_id: int, held: CardState, now: datetime) -> list[dict]:
    """Calls per UTC day for the chart's days: a key's live counters where Redis has them (its last
    LIVE_DAYS days), its persisted rows elsewhere. Without SQL. (The account names the counters'
    hash tag: one MGET, one slot.)"""
    today = now.date()
    first = today - timedelta(days=HISTORY_DAYS - 1)
    per_day = {first + timedelta(days=i): [0, 0] for i in range(HISTORY_DAYS)}
    per_key_day = {(kid, date.fromisoformat(day)): (calls, sandbox) for kid, day, calls, sandbox in held.rows}
    live_days = [today - timedelta(days=i) for i in range(LIVE_DAYS)]
    pairs = [(kid, day) for kid in held.key_ids for day in live_days]
    if r is not None and pairs:
        try:
            live = r.mget(
                [k for kid, day in pairs for k in (daily_key(account_id, kid, day), sandbox_key(account_id, kid, day))]
            )
            for i, pair in enumerate(pairs):
                if live[2 * i] is not None or live[2 * i + 1] is not None:
                    per_key_day[pair] = (int(live[2 * i] or 0), int(live[2 * i + 1] or 0))
        except redis_conn.UNAVAILABLE:
            pass  # the persisted figures are shown while Redis is away
    for (_, day), (calls, sandbox_calls) in per_key_day.items():
        if day in per_day:
            per_day[day][0] += calls
            per_day[day][1] += sandbox_calls
    return [{"day": d.isoformat(), "calls": c, "sandbox_calls": s} for d, (c, s) in sorted(per_day.items())]


def drop(r: redis.Redis, account_ids: Iterable[int]) -> None:
    """The accounts' held cards are out of date: each is read again on its next poll."""
    pipe = r.pipeline(transaction=False)
    for account_id in account_ids:
        pipe.incr(generation_key(account_id))
        pipe.delete(card_key(account_id))
    pipe.execute()


@signals.account_keys_changed.connect
def _keys_changed(account_id: int, **_) -> None:
    try:
        drop(redis_conn.for_limits(), [account_id])  # where state() holds it
    except redis_conn.UNAVAILABLE as err:
        log.warning("usage card of account %s not dropped (held at most %s s more): %s", account_id, CARD_SECONDS, err)
