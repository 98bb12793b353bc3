"""The gate while Redis is unreachable: it degrades instead of failing.

Keys are checked against the database (kept per process for a few seconds, see key_cache), the
burst limit and the failed-authentication throttle are enforced per process with the `limits`
library (Flask-Limiter's engine), the quota is checked against the persisted usage plus this
process's uncounted calls, and those calls are replayed into Redis as soon as it answers again.

A call whose gate.lua command was sent but whose reply never came (the primary died, the
connection dropped, the timeout) may have been counted by Redis already: the outage mode admits it
"uncertain", with the id gate.lua was given, and the replay counts it only if the server that
answers does not hold that id (metering.counters.count_unless_held).
"""

import logging
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import redis
from flask import Flask
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.limits import refusals
from levqor_core.limits.headers import BURST, rate_limit_headers
from levqor_core.limits.key_cache import UNREAD, KeyCache
from levqor_core.metering import counters as metering

log = logging.getLogger(__name__)

_FAILURES = RateLimitItemPerMinute(refusals.FAILED_AUTH_PER_MINUTE)
# Uncertain calls kept with their ids (a hung Redis makes every call one); past this, more are
# kept as plain pending calls, which a server that did count them would count twice.
UNCERTAIN_MAX = 10_000
# Uncertain calls asked about per replay (one round trip each; a replay may run in a request).
RECOUNT_AT_ONCE = 200


class PendingCounter(NamedTuple):
    """Which Redis counters calls admitted without Redis belong to."""

    key_id: str
    account_id: int
    period_id: str
    day: str  # ISO date
    area: str  # v1 | sandbox


class Uncertain(NamedTuple):
    """A call admitted here whose gate.lua run may have counted it (its reply was lost)."""

    counter: PendingCounter
    call_id: str  # gate.lua's ARGV[9]


class Outage:
    """Admission without Redis, and the calls it admitted until Redis counts them."""

    def __init__(self, app: Flask, r: redis.Redis, records: KeyCache, journal: Callable | None = None):
        self.app = app
        self.redis = r
        self.records = records
        self._limiter = FixedWindowRateLimiter(MemoryStorage())
        # Calls admitted without Redis, not yet in its counters.
        self.pending: Counter[PendingCounter] = Counter()
        # Of those, the ones gate.lua may have counted: recounted only if the server lacks them.
        self.uncertain: list[Uncertain] = []
        self._pending_lock = threading.Lock()
        # Where a recounted call goes, numbered in the server's life (the flusher's journal): if
        # that server in turn dies before its replica has it, it is replayed like any call.
        self.journal = journal

    @property
    def waiting(self) -> bool:
        """Whether calls admitted here wait to be handed to Redis."""
        return bool(self.pending or self.uncertain)

    def admit(self, key_hash: str, area: str, now: float, client: str | None, call_id: str | None = None) -> dict:
        """Admit one call in `area` from the database and this process's counts, or raise the
        matching problem; `client` is the caller's address bucket (failed authentications);
        `call_id` is gate.lua's id for a call whose reply was lost (Redis may have counted it)."""
        with self.app.app_context():
            return self._admit(key_hash, area, now, client, call_id)

    def _admit(self, key_hash: str, area: str, now: float, client: str | None, call_id: str | None) -> dict:
        record = self.records.outage_copy(key_hash, now)
        if record is UNREAD:
            if client and not self._limiter.test(_FAILURES, "auth-failures", client):
                raise refusals.throttled(now)
            record = self.records.read_for_outage(key_hash, now)
        if record is None:
            if client and not self._limiter.hit(_FAILURES, "auth-failures", client):
                raise refusals.throttled(now)
            raise refusals.unknown_key()
        if record.expires_at is not None and now >= record.expires_at:
            raise refusals.grace_over()
        sec = int(now)
        # Counted per whole second of `now`, as gate.lua does: the library's own window would start
        # at the first hit, and a call 0.6 s after it in the next second would be refused here only.
        per_second = RateLimitItemPerSecond(record.burst)
        if not self._limiter.hit(per_second, record.key_id, str(sec)):
            headers = rate_limit_headers(BURST, record.burst, 0, sec + 1, record.burst, 0, now)
            raise refusals.over_burst(record.burst, headers | {"Retry-After": "1"})
        burst_left = self._limiter.get_window_stats(per_second, record.key_id, str(sec)).remaining
        nowdt = datetime.fromtimestamp(now, UTC)
        today = nowdt.date()
        admitted = {"sub": str(record.account_id), "account_id": record.account_id, "key_id": record.key_id}
        if area == "meta":
            headers = rate_limit_headers(area, record.burst, burst_left, sec + 1, record.burst, burst_left, now)
            return admitted | {"headers": headers}
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
                headers = rate_limit_headers(area, limit, 0, int(reset), record.burst, burst_left, now)
                raise refusals.over_quota(area, limit, headers | {"Retry-After": refusals.retry_after(reset, now)})
            counter = PendingCounter(record.key_id, record.account_id, period.id, today.isoformat(), area)
            if call_id is not None and len(self.uncertain) < UNCERTAIN_MAX:
                self.uncertain.append(Uncertain(counter, call_id))
            else:
                self.pending[counter] += 1
        remaining = -1 if limit < 0 else limit - used - 1
        headers = rate_limit_headers(area, limit, remaining, int(reset), record.burst, burst_left, now)
        return admitted | {"headers": headers}

    def _pending_count(self, account_id: int, key_id: str | None, area: str) -> int:
        def counts(counter: PendingCounter) -> bool:
            return counter.area == area and (
                counter.key_id == key_id if area == "sandbox" else counter.account_id == account_id
            )

        return sum(n for counter, n in self.pending.items() if counts(counter)) + sum(
            1 for call in self.uncertain if counts(call.counter)
        )

    def pending_calls(self, account_id: int, key_id: str | None, area: str) -> int:
        """Calls admitted during the outage and not yet in Redis (sandbox: per key; v1: per account)."""
        with self._pending_lock:
            return self._pending_count(account_id, key_id, area)

    def replay(self) -> None:
        """Add the calls admitted during an outage to the Redis counters (after re-seeding them);
        kept for the next try if Redis is still unreachable. Counter by counter: on a Redis Cluster
        one shard may be back while another is not, and what reached a shard must not be sent
        again."""
        with self._pending_lock:
            pending, self.pending = self.pending, Counter()
            uncertain, self.uncertain = self.uncertain, []
        if uncertain:
            self._recount(uncertain)
        if not pending:
            return
        left: Counter[PendingCounter] = Counter()
        with self.app.app_context():
            seeded = set()
            for counter, n in pending.items():
                try:
                    if counter.key_id not in seeded:
                        self._seed(counter)
                        seeded.add(counter.key_id)
                    day = datetime.fromisoformat(counter.day).date()
                    pipe = self.redis.pipeline(transaction=False)  # one slot: the account's
                    metering.add_calls(
                        pipe, counter.key_id, counter.account_id, counter.period_id, day, counter.area, n
                    )
                    pipe.execute()
                except Exception as err:  # kept whatever failed: these calls exist nowhere else
                    log.warning("outage calls kept for the next replay: %r", err)
                    left[counter] += n
        if left:
            with self._pending_lock:
                self.pending.update(left)
        if len(left) < len(pending):
            log.info("replayed %d call(s) counted while redis was down", sum(pending.values()) - sum(left.values()))

    def _seed(self, counter: PendingCounter) -> None:
        """The key's counters from the database where Redis has none (it may have come back empty)."""
        account = db.session.get(Account, counter.account_id)
        metering.seed_counters(self.redis, account, counter.key_id, datetime.now(UTC))

    def _recount(self, uncertain: list[Uncertain]) -> None:
        """Count the calls whose gate.lua reply was lost unless their server holds them, up to
        RECOUNT_AT_ONCE of them (a request may be waiting); the others, and each one that failed,
        are kept for the next replay (asking again is safe: a recount notes the id). A bucket whose
        server failed is not asked again in this replay (one server may still hang)."""
        left, recounted, seeded, failed = uncertain[RECOUNT_AT_ONCE:], 0, set(), set()
        asked = uncertain[:RECOUNT_AT_ONCE]
        with self.app.app_context():
            for call in asked:
                counter = call.counter
                if metering.tag(counter.account_id) in failed:
                    left.append(call)
                    continue
                try:
                    if counter.key_id not in seeded:
                        self._seed(counter)
                        seeded.add(counter.key_id)
                    key_id, account_id, period_id, day_text, area = counter
                    day = datetime.fromisoformat(day_text).date()
                    recount = metering.count_unless_held(
                        self.redis, key_id, account_id, period_id, day, area, call.call_id
                    )
                except Exception as err:  # kept whatever failed: these calls may exist nowhere else
                    log.warning("uncertain outage call kept for the next replay: %r", err)
                    failed.add(metering.tag(counter.account_id))
                    left.append(call)
                    continue
                recounted += not recount.held
                if self.journal is not None:
                    self.journal(counter, recount)
        if left:
            with self._pending_lock:
                self.uncertain[:0] = left
        done = len(uncertain) - len(left)
        if done:
            log.info(
                "%d call(s) whose reply was lost: %d counted now, %d already counted by redis",
                done,
                recounted,
                done - recounted,
            )
