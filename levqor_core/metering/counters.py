"""Usage periods, Redis counters and their persistence to the database.

Counters live in Redis on the hot path (see gate.lua). They are copied to `usage_daily`
every USAGE_FLUSH_SECONDS; after a Redis restart or flush the counters are seeded again from
the database, and each web process replays the calls it admitted that the last flush had not
persisted (its journal, see flusher), so a Redis restart loses no call a live process admitted.

Every key an API call touches carries its account's hash tag (`lvq:{<bucket>}:…`, the account id
modulo BUCKETS): gate.lua's keys, the key record and the bucket's dirty set share one slot, so
the same code runs on one Redis and on a Redis Cluster, where a script or a multi-key command
may only touch one slot. The flush walks the BUCKETS dirty sets by name (no SCAN).
"""

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import redis
import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from levqor_core import redis_conn, tiers
from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.metering.models import UsageDaily
from levqor_core.tiers import SANDBOX_DAILY_LIMIT

# Hash-tag buckets: the accounts spread over this many slots, each with its own dirty set. Enough
# for an even spread over a cluster's shards (16,384 slots), few enough for the flush to read
# every bucket's set each tick.
BUCKETS = 1024
# Takes the bucket's pending pairs (with any a failed flush left behind) for this flush.
_TAKE_DIRTY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SUNIONSTORE', KEYS[2], KEYS[1], KEYS[2])
  redis.call('DEL', KEYS[1])
end
return redis.call('SMEMBERS', KEYS[2])
"""
# Rows a statement in the flush: 5 parameters each, far below PostgreSQL's 65,535 a statement and
# SQLite's 32,766.
FLUSH_CHUNK_ROWS = 2_000


@dataclass(frozen=True)
class Period:
    id: str  # part of the Redis counter name
    start: datetime
    end: datetime


def calendar_period(now: datetime) -> Period:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return Period(start.strftime("%Y-%m"), start, start + timedelta(days=days))


def current_period(account: Account, now: datetime) -> Period:
    """The subscription period for paid accounts while it runs; the calendar month otherwise."""
    if account.period_start and account.period_end and account.period_start <= now < account.period_end:
        return Period(f"p{int(account.period_start.timestamp())}", account.period_start, account.period_end)
    return calendar_period(now)


def day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def tag(account_id: int) -> str:
    """The hash tag every key of the account's calls carries: one slot per bucket of accounts."""
    return f"{{{int(account_id) % BUCKETS}}}"


def usage_key(account_id: int, period: Period | str) -> str:
    """The period counter; `period` may be a Period or its id."""
    return f"lvq:{tag(account_id)}:u:{account_id}:{getattr(period, 'id', period)}"


def daily_key(account_id: int, key_id: str, day: date) -> str:
    return f"lvq:{tag(account_id)}:d:{key_id}:{day.isoformat()}"


def sandbox_key(account_id: int, key_id: str, day: date) -> str:
    return f"lvq:{tag(account_id)}:s:{key_id}:{day.isoformat()}"


def burst_key(account_id: int, key_id: str, second: int) -> str:
    return f"lvq:{tag(account_id)}:b:{key_id}:{second}"


def dirty_key(account_id: int) -> str:
    """The bucket's set of (key, day) pairs counted since the last flush."""
    return dirty_key_of(tag(account_id))


def dirty_member(key_id: str, account_id: int, day: date) -> str:
    """A (key, day) pair in the bucket's dirty set, as gate.lua writes it and the flush reads it."""
    return f"{key_id}|{account_id}|{day.isoformat()}"


def epoch_key(account_id: int) -> str:
    """The bucket's life on its server: set by the first metered call, lost if Redis is emptied."""
    return epoch_key_of(tag(account_id))


def epoch_key_of(bucket_tag: str) -> str:
    return f"lvq:{bucket_tag}:epoch"


def dirty_key_of(bucket_tag: str) -> str:
    return f"lvq:{bucket_tag}:dirty"


def flushing_key_of(bucket_tag: str) -> str:
    """The bucket's pairs taken by a flush and not yet written (kept when it fails)."""
    return f"lvq:{bucket_tag}:flushing"


def all_tags() -> list[str]:
    return [f"{{{bucket}}}" for bucket in range(BUCKETS)]


def pending_pairs(r: redis.Redis) -> int:
    """How many (key, day) pairs wait for a flush, across every bucket."""
    pipe = r.pipeline(transaction=False)
    for bucket_tag in all_tags():
        pipe.scard(dirty_key_of(bucket_tag))
        pipe.scard(flushing_key_of(bucket_tag))
    return sum(pipe.execute())


def get_many(r: redis.Redis, keys: list[str]) -> list:
    """The values of keys of any buckets: one MGET per bucket (a multi-key command must stay in
    one slot on a Redis Cluster), pipelined."""
    by_tag: dict[str, list[int]] = {}
    for i, name in enumerate(keys):
        by_tag.setdefault(name[name.index("{") : name.index("}") + 1], []).append(i)
    pipe = r.pipeline(transaction=False)
    for positions in by_tag.values():
        pipe.execute_command("MGET", *(keys[i] for i in positions))  # one slot (the cluster pipeline has no mget())
    values: list = [None] * len(keys)
    for positions, found in zip(by_tag.values(), pipe.execute(), strict=True):
        for i, value in zip(positions, found, strict=True):
            values[i] = value
    return values


def period_days(period: Period) -> tuple[date, date]:
    """The first and last `usage_daily` days that count towards a period.

    Stripe periods start at the time of day the subscription began, so a paid period's first day
    is partial: its row also holds calls of the previous period, and a row cannot be split. That
    day is left out; the period's Redis counter starts at 0 and counts that day's calls from the
    first call on, so only a re-seed later in the period (a Redis loss) forgives them. A period
    that ends mid-day keeps that day."""
    first = period.start.date()
    if period.start != datetime.combine(first, datetime.min.time(), UTC):
        first += timedelta(days=1)
    return first, (period.end - timedelta(microseconds=1)).date()


def base_key(account_id: int, key_id: str, day: date) -> str:
    """A key's day counters as this Redis server's life found them (its replication id, `epoch`,
    and the counts): calls an earlier life numbered above them never reached this one (flusher
    replays them). gate.lua writes it on a life's first call of the key that day. It also holds
    the ids of the key's last 64 metered calls of the day per area (count_unless_held)."""
    return f"lvq:{tag(account_id)}:base:{key_id}:{day.isoformat()}"


# The life of the server holding a bucket, as gate.lua reads it: the server's replication id (a
# restart and a replica's promotion change it; a key would have been replicated) and the bucket's
# life key (an emptied Redis loses it). KEYS[1] the bucket's life key.
_EPOCH = """
local life = redis.call('GET', KEYS[1])
if not life then
  local t = redis.call('TIME')
  life = t[1] .. '.' .. t[2]
  redis.call('SET', KEYS[1], life)
end
local epoch = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') .. ':' .. life
"""
# What gate.lua does on a server life's first metered call of a key that day: note the life and
# the day counters it found. KEYS: day counter, sandbox day counter, base, the bucket's life key.
_REBASE_FOUND = """
if redis.call('HGET', KEYS[3], 'epoch') ~= epoch then
  redis.call('HSET', KEYS[3], 'epoch', epoch, 'calls', redis.call('GET', KEYS[1]) or 0,
    'sandbox', redis.call('GET', KEYS[2]) or 0)
  redis.call('EXPIRE', KEYS[3], 8 * 86400)
end
"""
_REBASE = (
    _EPOCH.replace("KEYS[1]", "KEYS[4]") + _REBASE_FOUND + "return redis.call('HMGET', KEYS[3], 'calls', 'sandbox')"
)
# A call whose gate.lua reply was lost (its id ARGV[2]), admitted by the outage mode: counted as
# gate.lua would count it, unless the key's day base holds its id (gate.lua counted it here; a
# replica holds the id iff it holds the count). Its id is then noted as gate.lua would, so a
# replay whose own reply is lost is not counted twice either. KEYS: as _REBASE, then the period's
# usage counter and the bucket's dirty set; ARGV: area, call id, dirty member.
# Returns {1 if it was already counted else 0, epoch, the call's number in its day counter}.
_COUNT_UNLESS_HELD = (
    _EPOCH.replace("KEYS[1]", "KEYS[4]")
    + """
local mark = ARGV[2] .. ' '
local base = redis.call('HGETALL', KEYS[3])
for i = 2, #base, 2 do
  if string.sub(base[i], 1, #mark) == mark then
    return {1, epoch, tonumber(string.sub(base[i], #mark + 1))}
  end
end
"""
    + _REBASE_FOUND
    + """
local n, ring
if ARGV[1] == 'sandbox' then
  n, ring = redis.call('INCR', KEYS[2]), 's'
else
  redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], 70 * 86400)
  n, ring = redis.call('INCR', KEYS[1]), 'v'
end
redis.call('EXPIRE', ring == 's' and KEYS[2] or KEYS[1], 8 * 86400)
redis.call('HSET', KEYS[3], ring .. n % 64, mark .. n)
redis.call('SADD', KEYS[6], ARGV[3])
return {0, epoch, n}
"""
)

# n admitted calls added to a key's counters (the outage mode's, handed over once Redis answers;
# the journal's replay) as gate.lua counts them: the day base is noted first, so calls added to a
# new life before any of its gate.lua calls of the key are not taken for what it found (a journal
# would then replay that many fewer of the calls the lost life counted). KEYS: as _REBASE, then the
# period's usage counter and the bucket's dirty set; ARGV: area, n, dirty member.
_ADD_CALLS = (
    _EPOCH.replace("KEYS[1]", "KEYS[4]")
    + _REBASE_FOUND
    + """
local n = tonumber(ARGV[2])
if ARGV[1] == 'sandbox' then
  redis.call('INCRBY', KEYS[2], n)
  redis.call('EXPIRE', KEYS[2], 8 * 86400)
else
  redis.call('INCRBY', KEYS[5], n)
  redis.call('EXPIRE', KEYS[5], 70 * 86400)
  redis.call('INCRBY', KEYS[1], n)
  redis.call('EXPIRE', KEYS[1], 8 * 86400)
end
redis.call('SADD', KEYS[6], ARGV[3])
"""
)


def rebase(r: redis.Redis, account_id: int, key_id: str, day: date) -> dict[str, int]:
    """The key's day counts as the current life of its server found them ({"calls", "sandbox"})."""
    keys = [
        daily_key(account_id, key_id, day),
        sandbox_key(account_id, key_id, day),
        base_key(account_id, key_id, day),
        epoch_key(account_id),
    ]
    calls, sandbox_calls = r.eval(_REBASE, 4, *keys)
    return {"calls": int(calls or 0), "sandbox": int(sandbox_calls or 0)}


class Recount(NamedTuple):
    """A call whose gate.lua reply was lost, once its server answered (count_unless_held)."""

    held: bool  # gate.lua had counted it: not counted again
    epoch: bytes  # the server life it is counted in now
    day_count: int  # its number in the key's day counter


def _counted_call_keys(key_id: str, account_id: int, period_id: str, day: date) -> list[str]:
    """The keys a counted call touches, in the order _COUNT_UNLESS_HELD and _ADD_CALLS take them
    (KEYS[1..6]); all in the account's slot."""
    return [
        daily_key(account_id, key_id, day),
        sandbox_key(account_id, key_id, day),
        base_key(account_id, key_id, day),
        epoch_key(account_id),
        usage_key(account_id, period_id),
        dirty_key(account_id),
    ]


def count_unless_held(
    r: redis.Redis, key_id: str, account_id: int, period_id: str, day: date, area: str, call_id: str
) -> Recount:
    """Count a call whose gate.lua reply was lost, unless the server already holds it (its id)."""
    keys = _counted_call_keys(key_id, account_id, period_id, day)
    held, epoch, day_count = r.eval(
        _COUNT_UNLESS_HELD, len(keys), *keys, area, call_id, dirty_member(key_id, account_id, day)
    )
    return Recount(bool(held), epoch, int(day_count))


def epochs(r: redis.Redis, tags: set[str]) -> dict[str, bytes]:
    """The current life of each bucket's server, as gate.lua tags the calls it counts (one is
    started where the bucket has none, as gate.lua would: a call journaled after this read must
    not look older than it)."""
    ordered = sorted(tags)
    pipe = r.pipeline(transaction=False)
    for bucket_tag in ordered:
        pipe.execute_command("EVAL", _EPOCH + "return epoch", 1, epoch_key_of(bucket_tag))
    return dict(zip(ordered, pipe.execute(), strict=True))


def add_calls(pipe, key_id: str, account_id: int, period_id: str, day: date, area: str, n: int) -> None:
    """Queue on `pipe` what gate.lua does for n admitted calls: the day base first, the counters,
    and the dirty mark that has the next flush persist them."""
    keys = _counted_call_keys(key_id, account_id, period_id, day)
    # EVAL by name: redis-py's cluster pipeline has no eval() (it routes EVAL by its keys).
    pipe.execute_command("EVAL", _ADD_CALLS, len(keys), *keys, area, n, dirty_member(key_id, account_id, day))


def persisted_period_calls(account_id: int, period: Period) -> int:
    first, last = period_days(period)
    return int(
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(UsageDaily.calls), 0)).where(
                UsageDaily.account_id == account_id, UsageDaily.day >= first, UsageDaily.day <= last
            )
        )
    )


def persisted_day(key_id: str, day: date) -> tuple[int, int]:
    row = db.session.get(UsageDaily, (key_id, day))
    return (row.calls, row.sandbox_calls) if row else (0, 0)


def seed_counters(r: redis.Redis, account: Account, key_id: str, now: datetime) -> None:
    """Restore counters Redis lost from the database; existing counters are left alone."""
    period = current_period(account, now)
    r.set(usage_key(account.id, period), persisted_period_calls(account.id, period), nx=True, ex=70 * 86400)
    seed_day(r, account.id, key_id, now.date())


def seed_day(r: redis.Redis, account_id: int, key_id: str, day: date) -> None:
    """A key's day counters from the database, where Redis has none."""
    calls, sandbox_calls = persisted_day(key_id, day)
    pipe = r.pipeline(transaction=False)
    pipe.set(daily_key(account_id, key_id, day), calls, nx=True, ex=8 * 86400)
    pipe.set(sandbox_key(account_id, key_id, day), sandbox_calls, nx=True, ex=8 * 86400)
    pipe.execute()


def flush_usage(r: redis.Redis) -> int:
    """Copy the counters touched since the last flush into usage_daily; returns rows written.

    Each bucket's dirty set is taken whole, atomically, into its flushing set (with what a failed
    flush left there). The pairs then go in chunks of FLUSH_CHUNK_ROWS: one statement for all of
    them passes PostgreSQL's 65,535 parameters a statement past ~13,100 pairs (5 a row), and a
    flush that always fails never empties the flushing sets, so usage would freeze for good. Each
    chunk's pairs leave their flushing sets once committed: a failure (the database away) keeps
    only what is left for the next tick, and the upsert never moves a row backwards, so a chunk
    written twice is harmless."""
    pipe = r.pipeline(transaction=False)
    for bucket_tag in all_tags():
        # EVAL by name: redis-py's cluster pipeline has no eval() (it routes EVAL by its keys).
        pipe.execute_command("EVAL", _TAKE_DIRTY, 2, dirty_key_of(bucket_tag), flushing_key_of(bucket_tag))
    members = sorted(m.decode() for taken in pipe.execute() for m in taken)
    written = 0
    for start in range(0, len(members), FLUSH_CHUNK_ROWS):
        chunk = members[start : start + FLUSH_CHUNK_ROWS]
        try:
            written += _flush_chunk(r, chunk)
        except Exception:
            db.session.rollback()
            raise
        by_bucket: dict[str, list[str]] = {}
        for member in chunk:
            by_bucket.setdefault(tag(int(member.split("|")[1])), []).append(member)
        pipe = r.pipeline(transaction=False)
        for bucket_tag, done in by_bucket.items():
            pipe.srem(flushing_key_of(bucket_tag), *done)
        pipe.execute()
    return written


def _flush_chunk(r: redis.Redis, members: list[str]) -> int:
    entries = []
    for member in members:
        key_id, account_id, day_text = member.split("|")
        entries.append((key_id, int(account_id), date.fromisoformat(day_text)))
    # An account deleted since its calls were counted has nothing to keep them for (and its row is
    # gone, which the foreign key would refuse for the whole batch).
    live = set(db.session.scalars(sa.select(Account.id).where(Account.id.in_({a for _, a, _ in entries}))))
    entries = [entry for entry in entries if entry[1] in live]
    if not entries:
        return 0
    values = get_many(
        r,
        [k for key_id, acct, day in entries for k in (daily_key(acct, key_id, day), sandbox_key(acct, key_id, day))],
    )
    rows = [
        {
            "key_id": key_id,
            "account_id": account_id,
            "day": day,
            "calls": int(values[2 * i] or 0),
            "sandbox_calls": int(values[2 * i + 1] or 0),
        }
        for i, (key_id, account_id, day) in enumerate(entries)
    ]
    _upsert_usage(rows)
    return len(rows)


def _upsert_usage(rows: list[dict]) -> None:
    dialect = db.engine.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    greatest = sa.func.greatest if dialect == "postgresql" else sa.func.max
    stmt = insert(UsageDaily).values(rows)
    # Counts only grow within a day: never let a stale value move a row backwards.
    stmt = stmt.on_conflict_do_update(
        index_elements=["key_id", "day"],
        set_={
            "calls": greatest(UsageDaily.calls, stmt.excluded.calls),
            "sandbox_calls": greatest(UsageDaily.sandbox_calls, stmt.excluded.sandbox_calls),
        },
    )
    db.session.execute(stmt)
    db.session.commit()


def _seeded_counters(r: redis.Redis, account: Account, key_id: str, now: datetime, period: Period) -> tuple:
    """(period calls, sandbox calls today) of the account and key, seeded from the database only
    when a counter seed_counters sets is missing: every poll of the usage card asks, and the seed's
    two queries are for after a Redis loss."""
    today = now.date()
    # Not in a pipeline: redis-py's cluster pipeline refuses MGET (RedisClusterException).
    # The day's base is gate.lua's, written on a life's first metered call: not the seed's business.
    used, sandbox_today, calls_today = r.mget(
        usage_key(account.id, period), sandbox_key(account.id, key_id, today), daily_key(account.id, key_id, today)
    )
    if used is None or sandbox_today is None or calls_today is None:
        seed_counters(r, account, key_id, now)
        used, sandbox_today = r.mget(usage_key(account.id, period), sandbox_key(account.id, key_id, today))
    return used, sandbox_today


def usage_snapshot(r: redis.Redis, account: Account, key_id: str | None, now: datetime) -> dict:
    """The numbers enforcement uses, as GET /api/usage reports them."""
    tier = tiers.get(account.tier)
    period = current_period(account, now)
    today = now.date()
    estimated = False
    try:
        if key_id:
            used, sandbox_today = _seeded_counters(r, account, key_id, now, period)
        else:
            used = r.get(usage_key(account.id, period)) or persisted_period_calls(account.id, period)
            sandbox_today = 0
    except redis_conn.UNAVAILABLE:
        # Redis is away: what was persisted, plus the calls this process admitted meanwhile.
        estimated = True
        pending = current_app.extensions["levqor.gate"].outage.pending_calls
        used = persisted_period_calls(account.id, period) + pending(account.id, None, "v1")
        sandbox_today = (persisted_day(key_id, today)[1] + pending(account.id, key_id, "sandbox")) if key_id else 0
    used = int(used or 0)
    quota = tier.monthly_quota
    return {
        "tier": tier.name,
        "calls_used": used,
        "quota": quota,
        "remaining": None if quota is None else max(quota - used, 0),
        "period_start": period.start.isoformat(),
        "resets_at": period.end.isoformat(),
        "burst_per_second": tier.burst_per_second,
        "estimated": estimated,
        "sandbox": {
            "calls_today": int(sandbox_today or 0),
            "limit": SANDBOX_DAILY_LIMIT,
            "resets_at": day_end(today).isoformat(),
        },
    }


@deletion.step("usage-rows", deletion.ROWS, tables=("usage_daily",))
def _delete_usage_rows(account: Account, _actor) -> None:
    db.session.execute(sa.delete(UsageDaily).where(UsageDaily.account_id == account.id))
