"""The API's front gate: authenticates a key and applies burst limit, quota and metering.

An authorised request costs one Redis round trip (gate.lua) and no SQL once the key record is
cached in Redis. Revoking or rotating a key deletes its cached record, so the change is seen
by every process on its next request.

While Redis is unreachable the gate degrades instead of failing: keys are checked against the
database (cached per process for DEGRADED_CACHE_SECONDS), the burst limit is enforced per
process with the `limits` library (Flask-Limiter's engine), the quota is checked against the
persisted usage plus this process's uncounted calls, and those calls are replayed into Redis
as soon as it answers again.

Each process also keeps a short journal of the calls it admitted, numbered by the key's day
counter and tagged with the Redis server's life (its epoch). When Redis comes back empty, the
flusher replays the journaled calls numbered above what the database held (the seed base):
exactly the ones no flush had persisted.
"""

import asyncio
import functools
import ipaddress
import logging
import threading
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
import sqlalchemy as sa
from flask import current_app
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys import format as keyfmt
from levqor_core.keys.models import ApiKey
from levqor_core.limits import tiers
from levqor_core.limits.headers import BURST, ietf_remaining, policy, rate_limit_headers
from levqor_core.metering import counters as metering

log = logging.getLogger(__name__)

RECORD_TTL = 600  # also bounds how long a revocation missed during an outage can linger
NEGATIVE_TTL = 60
DEGRADED_CACHE_SECONDS = 5
DEGRADED_CACHE_SIZE = 10_000
# Failed authentications (well-formed keys that are unknown or revoked) allowed per client
# address per minute; past that, unknown keys from it get 429 without a database lookup.
FAILED_AUTH_PER_MINUTE = 20
_SCRIPT = (Path(__file__).with_name("gate.lua")).read_text()
EPOCH_KEY = "lvq:epoch"
# How long an admitted call stays in the journal: many flush intervals, after which a flush has
# persisted it (a Redis restart then re-seeds it from the database).
JOURNAL_SECONDS = 60
# A bound for when the flusher that prunes it does not run (USAGE_FLUSH_SECONDS=0): past it the
# oldest entries go, which only forgoes replaying them after a Redis loss.
JOURNAL_MAX_ENTRIES = 200_000


def _hash_of(raw_key: str) -> str:
    """The stored hash of a key, after refusing a malformed or mistyped one without any lookup."""
    if not keyfmt.is_well_formed(raw_key):
        raise problems.InvalidApiKey("The x-api-key header is not a well-formed Levqor key (lvq_…).")
    return keyfmt.hash_key(raw_key)


def record_key(key_hash: str) -> str:
    return f"lvq:k:{key_hash}"


def client_bucket(host: str | None) -> str | None:
    """Whom failed authentications are counted against: the address, or its /64 for IPv6 (one
    subscriber's whole allocation, which it can pick addresses from at will)."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def failures_key(client: str, now: float) -> str:
    return f"lvq:f:{client}:{int(now) // 60}"


def _script_keys(key_hash: str, client: str | None, now: float) -> list[str]:
    return [record_key(key_hash), failures_key(client, now)] if client else [record_key(key_hash)]


def generation_key(key_hash: str) -> str:
    """Bumped by every forget(): a record read from the database before a bump is stale."""
    return f"lvq:kg:{key_hash}"


# Writes a key record only if no forget() happened since the database read (KEYS[2] unchanged).
# KEYS[1] record, KEYS[2] generation; ARGV[1] generation seen before the read ('*': write anyway),
# ARGV[2] TTL, ARGV[3..] the record's fields and values.
_FILL_SCRIPT = """
if ARGV[1] ~= '*' and (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
FILL_ATTEMPTS = 3


@dataclass
class KeyRecord:
    account_id: int
    key_id: str
    quota: int  # -1 = unlimited
    burst: int
    period: metering.Period | None  # paid subscription period, else None (calendar month)
    expires_at: float | None


class Gate:
    def __init__(self, app, r: redis.Redis, flush_seconds: float, async_client_factory=None):
        self.app = app
        self.redis = r
        self.script = r.register_script(_SCRIPT)
        self._fill = r.register_script(_FILL_SCRIPT)
        # The API's security check runs on the event loop: it talks to Redis without blocking it.
        self._async_client_factory = async_client_factory
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.flush_seconds = flush_seconds
        self._pending: Counter = Counter()
        self._forget_later: set[str] = set()
        self._pending_lock = threading.Lock()
        self._degraded_cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._burst_fallback = FixedWindowRateLimiter(MemoryStorage())
        self._flusher: threading.Thread | None = None
        # (admitted at, key id, account id, period id, day, area, epoch, day counter value)
        self._journal: deque = deque(maxlen=JOURNAL_MAX_ENTRIES)

    # -- the hot path -------------------------------------------------------------------------

    def authorize(self, raw_key: str, area: str, now: float | None = None, client: str | None = None) -> dict:
        """Admit one call in `area` (v1 | sandbox | meta) or raise the matching problem.
        `client` (the caller's address) has its failed authentications throttled."""
        return self.authorize_hash(_hash_of(raw_key), area, now, client)

    def authorize_hash(self, key_hash: str, area: str, now: float | None = None, client: str | None = None) -> dict:
        """Admit one call for the key with this hash: the portal uses it to run sandbox calls
        for a signed-in developer without ever holding the raw key."""
        self._start_flusher()
        now = time.time() if now is None else now
        client = client_bucket(client)
        try:
            result = self._run(key_hash, area, now, client)
            if result[0] == b"miss":
                self._cache_record(key_hash, now)
                result = self._run(key_hash, area, now, client)
            if self._pending or self._forget_later:
                self._replay_pending()
        except redis.RedisError as err:
            log.warning("redis unavailable, gate degraded: %s", err)
            return self._authorize_degraded(key_hash, area, now, client)
        return self._verdict(result, area, now)

    def _run(self, key_hash: str, area: str, now: float, client: str | None):
        return self.script(keys=_script_keys(key_hash, client, now), args=script_args(area, now))

    async def authorize_async(
        self, raw_key: str, area: str, now: float | None = None, client: str | None = None
    ) -> dict:
        """authorize() for the event loop: the Redis round trip is awaited, and the rare paths
        that touch the database (cache miss, outage) run in a worker thread."""
        key_hash = _hash_of(raw_key)
        self._start_flusher()
        now = time.time() if now is None else now
        client = client_bucket(client)
        conn, script = self._async_client()
        keys = _script_keys(key_hash, client, now)
        try:
            result = await script(keys=keys, args=script_args(area, now), client=conn)
            if result[0] == b"miss":
                await asyncio.to_thread(self._cache_record, key_hash, now)
                result = await script(keys=keys, args=script_args(area, now), client=conn)
            if self._pending or self._forget_later:
                await asyncio.to_thread(self._replay_pending)
        except redis.RedisError as err:
            log.warning("redis unavailable, gate degraded: %s", err)
            return await asyncio.to_thread(self._authorize_degraded, key_hash, area, now, client)
        return self._verdict(result, area, now)

    def _async_client(self):
        """One asyncio client per event loop (a test client may run several loops)."""
        loop = asyncio.get_running_loop()
        entry = self._async_clients.get(loop)
        if entry is None:
            client = self._async_client_factory()
            entry = self._async_clients[loop] = (client, client.register_script(_SCRIPT))
        return entry

    def _verdict(self, result, area: str, now: float) -> dict:
        verdict = result[0].decode()
        if verdict == "guessing":
            raise _throttled(int(result[1]), int(result[3]), now)
        if verdict in ("unknown", "miss"):
            raise problems.InvalidApiKey("This API key is unknown or has been revoked.")
        if verdict == "expired":
            raise problems.InvalidApiKey("This API key's rotation grace period is over; use the new key.")
        limit, remaining, reset, burst, burst_left = (int(x) for x in result[1:6])
        # A burst refusal reports the per-second window: the quota was not consulted.
        headers = rate_limit_headers(
            BURST if verdict == "burst" else area, limit, remaining, reset, burst, burst_left, now
        )
        if verdict == "ok":
            if len(result) > 8:  # a metered call: journal it (see the module docstring)
                self._journal.append(
                    (
                        now,
                        result[7],
                        int(result[6]),
                        result[10],
                        _calendar_args(int(now))[2],
                        area,
                        result[8],
                        int(result[9]),
                    )
                )
            return {
                "sub": result[6].decode(),
                "account_id": int(result[6]),
                "key_id": result[7].decode(),
                "headers": headers,
            }
        headers["Retry-After"] = str(max(1, int(reset - now + 0.999)))
        raise {
            "burst": problems.BurstLimitExceeded(f"More than {burst} calls per second on this key."),
            "quota": problems.MonthlyQuotaExceeded(
                f"This account has used its {limit:,} calls for the period; upgrade or wait for the reset."
            ),
            "sandbox": problems.SandboxDailyCapExceeded(f"The sandbox allows {limit} calls per key per UTC day."),
        }[verdict].with_headers(headers)

    # -- key records ----------------------------------------------------------------------------

    def _load(self, key_hash: str, now: float) -> tuple[KeyRecord | None, Account | None]:
        """The key's record from the database (call inside an app context); (None, None) when
        the key is unknown, revoked or expired."""
        row = db.session.execute(sa.select(ApiKey, Account).join(Account).where(ApiKey.key_hash == key_hash)).first()
        if row is None:
            return None, None
        key, account = row
        nowdt = datetime.fromtimestamp(now, UTC)
        if not key.is_usable(nowdt):
            return None, None
        tier = tiers.get(account.tier)
        period = metering.current_period(account, nowdt)
        record = KeyRecord(
            account_id=account.id,
            key_id=key.id,
            quota=-1 if tier.monthly_quota is None else tier.monthly_quota,
            burst=tier.burst_per_second,
            period=period if period.id.startswith("p") else None,
            expires_at=key.expires_at.timestamp() if key.status == "expiring" else None,
        )
        return record, account

    def _cache_record(self, key_hash: str, now: float) -> None:
        """Cache the key's record (or that it is unknown). A revocation or tier change that lands
        between the database read and the write would otherwise leave the old record cached for
        RECORD_TTL; the generation check turns that into another read."""
        for attempt in range(1, FILL_ATTEMPTS + 1):
            # The last attempt writes what it read whatever happens meanwhile: its read is at most
            # a moment old, and leaving the key uncached would answer this call "unknown key".
            generation = b"*" if attempt == FILL_ATTEMPTS else self.redis.get(generation_key(key_hash)) or b""
            with self.app.app_context():
                record, account = self._load(key_hash, now)
                if record is not None:
                    metering.seed_counters(self.redis, account, record.key_id, datetime.fromtimestamp(now, UTC))
            if record is None:
                fields, ttl = {"acct": ""}, NEGATIVE_TTL  # remembered as unknown for a minute
            else:
                fields, ttl = (
                    {
                        "acct": record.account_id,
                        "kid": record.key_id,
                        "quota": record.quota,
                        "burst": record.burst,
                        "pid": record.period.id if record.period else "",
                        "pend": int(record.period.end.timestamp()) if record.period else "",
                        "exp": repr(record.expires_at) if record.expires_at else "",
                    },
                    RECORD_TTL,
                )
            pairs = [x for field, value in fields.items() for x in (field, value)]
            if self._fill(keys=[record_key(key_hash), generation_key(key_hash)], args=[generation, ttl, *pairs]):
                return

    # -- Redis outage ---------------------------------------------------------------------------

    def _authorize_degraded(self, key_hash: str, area: str, now: float, client: str | None = None) -> dict:
        with self.app.app_context():
            return self._admit_degraded(key_hash, area, now, client)

    def _admit_degraded(self, key_hash: str, area: str, now: float, client: str | None = None) -> dict:
        cached = self._degraded_cache.get(key_hash)
        failures = RateLimitItemPerMinute(FAILED_AUTH_PER_MINUTE)
        if cached and cached[0] > now:
            record = cached[1]
        else:
            if client and not self._burst_fallback.test(failures, "auth-failures", client):
                raise _throttled(FAILED_AUTH_PER_MINUTE, (int(now) // 60 + 1) * 60, now)
            if len(self._degraded_cache) >= DEGRADED_CACHE_SIZE:
                self._degraded_cache.clear()  # a flood of made-up keys must not grow it without bound
            record = self._load(key_hash, now)[0]
            self._degraded_cache[key_hash] = (now + DEGRADED_CACHE_SECONDS, record)
        if record is None:
            if client and not self._burst_fallback.hit(failures, "auth-failures", client):
                raise _throttled(FAILED_AUTH_PER_MINUTE, (int(now) // 60 + 1) * 60, now)
            raise problems.InvalidApiKey("This API key is unknown or has been revoked.")
        if record.expires_at is not None and now >= record.expires_at:
            raise problems.InvalidApiKey("This API key's rotation grace period is over; use the new key.")
        burst_item = RateLimitItemPerSecond(record.burst)
        sec = int(now)
        if not self._burst_fallback.hit(burst_item, record.key_id):
            raise problems.BurstLimitExceeded(f"More than {record.burst} calls per second on this key.").with_headers(
                rate_limit_headers(BURST, record.burst, 0, sec + 1, record.burst, 0, now) | {"Retry-After": "1"}
            )
        nowdt = datetime.fromtimestamp(now, UTC)
        today = nowdt.date()
        admitted = {"sub": str(record.account_id), "account_id": record.account_id, "key_id": record.key_id}
        if area == "meta":
            return admitted | {"headers": rate_limit_headers(area, record.burst, 0, sec + 1, record.burst, 0, now)}
        period = record.period or metering.calendar_period(nowdt)
        if area == "sandbox":
            used = metering.persisted_day(record.key_id, today)[1]
            limit, reset = tiers.SANDBOX_DAILY_LIMIT, metering.day_end(today).timestamp()
        else:
            used = metering.persisted_period_calls(record.account_id, period)
            limit, reset = record.quota, period.end.timestamp()
        with self._pending_lock:
            used += self._pending_count(record.account_id, record.key_id, area)
            if limit >= 0 and used >= limit:
                problem = problems.SandboxDailyCapExceeded if area == "sandbox" else problems.MonthlyQuotaExceeded
                raise problem("Limit reached.").with_headers(
                    rate_limit_headers(area, limit, 0, int(reset), record.burst, 0, now)
                    | {"Retry-After": str(max(1, int(reset - now)))}
                )
            self._pending[(record.key_id, record.account_id, period.id, today.isoformat(), area)] += 1
        remaining = -1 if limit < 0 else limit - used - 1
        return admitted | {"headers": rate_limit_headers(area, limit, remaining, int(reset), record.burst, 0, now)}

    def _pending_count(self, account_id: int, key_id: str | None, area: str) -> int:
        """Calls admitted during the outage and not yet in Redis (sandbox: per key; v1: per account)."""
        return sum(
            n
            for (kid, acct, _pid, _day, a), n in self._pending.items()
            if a == area and (kid == key_id if area == "sandbox" else acct == account_id)
        )

    def pending_calls(self, account_id: int, key_id: str | None, area: str) -> int:
        with self._pending_lock:
            return self._pending_count(account_id, key_id, area)

    def _replay_pending(self) -> None:
        """Add the calls admitted during an outage to the Redis counters (after re-seeding)."""
        with self._pending_lock:
            pending, self._pending = self._pending, Counter()
            forget, self._forget_later = self._forget_later, set()
        try:
            if forget:
                self._drop_records(forget)
            with self.app.app_context():
                seeded = set()
                pipe = self.redis.pipeline(transaction=False)
                for (kid, acct, pid, day_text, area), n in pending.items():
                    if kid not in seeded:
                        account = db.session.get(Account, acct)
                        metering.seed_counters(self.redis, account, kid, datetime.now(UTC))
                        seeded.add(kid)
                    metering.add_calls(pipe, kid, acct, pid, datetime.fromisoformat(day_text).date(), area, n)
                pipe.execute()
            log.info("replayed %d call(s) counted while redis was down", sum(pending.values()))
        except redis.RedisError:
            with self._pending_lock:
                self._pending.update(pending)
                self._forget_later.update(forget)

    # -- persistence --------------------------------------------------------------------------------

    def _start_flusher(self) -> None:
        if self._flusher is None and self.flush_seconds > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="usage-flush", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            try:
                self.background_tick()
            except Exception:  # keep flushing after a Redis or database hiccup
                log.exception("usage flush failed")

    def background_tick(self) -> None:
        """What the flusher thread does each interval: hand calls admitted during an outage to
        Redis once it answers (even if this process gets no more calls), then persist usage."""
        if self._pending or self._forget_later:
            self._replay_pending()
        try:
            self._replay_journal()
        except redis.RedisError as err:
            log.warning("journal replay deferred, redis unavailable: %s", err)
        try:
            # One process flushes per interval; the others skip.
            if self.redis.set("lvq:flush-lock", "1", nx=True, px=int(self.flush_seconds * 900) or 1):
                with self.app.app_context():
                    metering.flush_usage(self.redis)
        except redis.RedisError as err:
            log.warning("usage flush skipped, redis unavailable: %s", err)

    def _replay_journal(self) -> None:
        """Prune the journal; if Redis lost the counters since (a new epoch), add back the calls
        journaled under the old one that the database had not seen."""
        if not self._journal:
            return
        epoch = self.redis.get(EPOCH_KEY)
        if epoch is None:
            # Start this Redis's life now, as gate.lua would: a call journaled after this read
            # must not look stale (it would be replayed on top of itself).
            seconds, micros = self.redis.time()
            self.redis.set(EPOCH_KEY, f"{seconds}.{micros}", nx=True)
            epoch = self.redis.get(EPOCH_KEY)
        horizon = time.time() - JOURNAL_SECONDS
        stale: dict[tuple, list] = {}
        kept = []
        while self._journal:
            entry = self._journal.popleft()
            admitted_at, kid, acct, pid, day_text, area, entry_epoch, n = entry
            if entry_epoch != epoch:
                stale.setdefault((kid.decode(), acct, pid.decode(), day_text, area), []).append(entry)
            elif admitted_at >= horizon:
                kept.append(entry)
        self._journal.extendleft(reversed(kept))  # calls admitted meanwhile stay after them
        if not stale:
            return
        try:
            replayed = self._replay_stale(stale)
        except Exception:
            self._journal.extend(e for entries in stale.values() for e in entries)  # next tick
            raise
        if replayed:
            log.warning("redis lost its counters: replayed %d call(s) no flush had persisted", replayed)

    def _replay_stale(self, stale: dict[tuple, list]) -> int:
        replayed = 0
        with self.app.app_context():
            for (kid, acct, pid, day_text, area), entries in list(stale.items()):
                day = datetime.fromisoformat(day_text).date()
                field = "sandbox" if area == "sandbox" else "calls"
                account = db.session.get(Account, acct)
                if account is None:
                    del stale[(kid, acct, pid, day_text, area)]
                    continue
                # Seeds what this Redis lacks (nx): the base is what the database held, so the
                # calls numbered above it are the ones no flush persisted.
                metering.seed_counters(self.redis, account, kid, datetime.now(UTC))
                metering.seed_day(self.redis, kid, day)
                base = int(self.redis.hget(metering.base_key(kid, day), field) or 0)
                lost = sum(1 for entry in entries if entry[-1] > base)
                if not lost:
                    del stale[(kid, acct, pid, day_text, area)]
                    continue
                pipe = self.redis.pipeline(transaction=False)
                metering.add_calls(pipe, kid, acct, pid, day, area, lost)
                pipe.execute()
                del stale[(kid, acct, pid, day_text, area)]  # done: not to be re-journaled on a later error
                replayed += lost
        return replayed

    # -- cache invalidation -----------------------------------------------------------------------

    def _drop_records(self, key_hashes) -> None:
        pipe = self.redis.pipeline()
        for h in key_hashes:
            pipe.incr(generation_key(h))
            pipe.expire(generation_key(h), RECORD_TTL)
            pipe.delete(record_key(h))
        pipe.execute()

    def forget(self, key_hashes: list[str]) -> None:
        for h in key_hashes:
            self._degraded_cache.pop(h, None)
        if key_hashes:
            try:
                self._drop_records(key_hashes)
            except redis.RedisError:
                # Retried after the next call that reaches Redis again (see _replay_pending).
                with self._pending_lock:
                    self._forget_later.update(key_hashes)
                raise


@functools.lru_cache(maxsize=4)
def _calendar_args(second: int) -> tuple:
    nowdt = datetime.fromtimestamp(second, UTC)
    period = metering.calendar_period(nowdt)
    today = nowdt.date()
    return (
        period.id,
        int(period.end.timestamp()),
        today.isoformat(),
        int(metering.day_end(today).timestamp()),
        tiers.SANDBOX_DAILY_LIMIT,
    )


def script_args(area: str, now: float) -> list:
    """gate.lua's ARGV; the calendar part only changes once a second."""
    return [area, repr(now), *_calendar_args(int(now)), FAILED_AUTH_PER_MINUTE, (int(now) // 60 + 1) * 60]


def _throttled(limit: int, reset: int, now: float) -> problems.Problem:
    seconds_left = max(1, int(reset - now + 0.999))
    return problems.AuthenticationThrottled(
        f"More than {limit} failed authentications from your address this minute; check the key you send."
    ).with_headers(
        {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset),
            "RateLimit-Policy": policy("failed-auth", limit, 60),
            "RateLimit": ietf_remaining("failed-auth", 0, seconds_left),
            "Retry-After": str(seconds_left),
        }
    )


def current() -> Gate:
    """The gate of the app in context."""
    return current_app.extensions["levqor.gate"]


def forget_keys(key_hashes: list[str]) -> None:
    """Drop cached key records (after a rotation or revocation)."""
    try:
        current().forget(key_hashes)
    except redis.RedisError:
        log.warning("could not drop cached key records; they expire within %ss", RECORD_TTL)


def forget_account(account_id: int) -> None:
    """Drop the cached records of an account's keys (after a tier or period change)."""
    hashes = db.session.scalars(
        sa.select(ApiKey.key_hash).where(ApiKey.account_id == account_id, ApiKey.status.in_(("active", "expiring")))
    ).all()
    forget_keys(list(hashes))
