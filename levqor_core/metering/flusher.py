"""Each web process's usage flusher: it persists the Redis counters and keeps them whole.

Every USAGE_FLUSH_SECONDS a thread of the process hands Redis what it missed while unreachable
(the `catch_up` it is given), replays journaled calls a lost Redis took with it, then, if no
other process holds the lock for this interval, copies the counters to `usage_daily`.

The journal holds the calls this process admitted in the last JOURNAL_SECONDS, each numbered by
its key's day counter and tagged with the Redis server's life (its epoch, which gate.lua sets).
When Redis comes back empty, the journaled calls numbered above what the database held (the
seed base) are exactly the ones no flush had persisted: those are added back.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import redis
from flask import Flask

from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.periodic_thread import PeriodicThread

log = logging.getLogger(__name__)

EPOCH_KEY = "lvq:epoch"
FLUSH_LOCK_KEY = "lvq:flush-lock"
# How long an admitted call stays in the journal: many flush intervals, after which a flush has
# persisted it (a Redis restart then re-seeds it from the database).
JOURNAL_SECONDS = 60
# A bound for when the flusher that prunes it does not run (USAGE_FLUSH_SECONDS=0): past it the
# oldest entries go, which only forgoes replaying them after a Redis loss.
JOURNAL_MAX_ENTRIES = 200_000


class JournalEntry(NamedTuple):
    """One metered call a process admitted, as gate.lua numbered it (appended on the hot path)."""

    admitted_at: float
    key_id: bytes
    account_id: int
    period_id: bytes
    day: str  # ISO date
    area: str  # v1 | sandbox
    epoch: bytes  # the Redis server's life it was counted in
    day_count: int  # the key's day counter after it


class UsageFlusher:
    def __init__(self, app: Flask, r: redis.Redis, flush_seconds: float, catch_up: Callable[[], None]):
        self.app = app
        self.redis = r
        self.flush_seconds = flush_seconds
        self.catch_up = catch_up
        self.journal: deque[JournalEntry] = deque(maxlen=JOURNAL_MAX_ENTRIES)
        # A worker stopped by its server (a deploy, max-requests) soon after Redis came back empty
        # replays its journal at exit: the calls only it remembers are not lost with it.
        self.thread = PeriodicThread("usage-flush", flush_seconds, self._tick)

    def start(self) -> None:
        self.thread.start()

    def tick(self) -> None:
        """One interval's work: hand Redis the calls admitted during an outage once it answers
        (even if this process gets no more calls), replay the journal, then persist usage."""
        self.thread.tick()

    def _tick(self) -> None:
        self.catch_up()
        try:
            self._replay_journal()
        except redis.RedisError as err:
            log.warning("journal replay deferred, redis unavailable: %s", err)
        try:
            # One process flushes per interval; the others skip.
            if self.redis.set(FLUSH_LOCK_KEY, "1", nx=True, px=int(self.flush_seconds * 900) or 1):
                with self.app.app_context():
                    metering.flush_usage(self.redis)
        except redis.RedisError as err:
            log.warning("usage flush skipped, redis unavailable: %s", err)

    def _replay_journal(self) -> None:
        """Prune the journal; if Redis lost the counters since (a new epoch), add back the calls
        journaled under the old one that the database had not seen."""
        if not self.journal:
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
        while self.journal:
            entry = self.journal.popleft()
            if entry.epoch != epoch:
                counter = (entry.key_id.decode(), entry.account_id, entry.period_id.decode(), entry.day, entry.area)
                stale.setdefault(counter, []).append(entry)
            elif entry.admitted_at >= horizon:
                kept.append(entry)
        self.journal.extendleft(reversed(kept))  # calls admitted meanwhile stay after them
        if not stale:
            return
        try:
            replayed = self._replay_stale(stale)
        except Exception:
            self.journal.extend(e for entries in stale.values() for e in entries)  # next tick
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
                lost = sum(1 for entry in entries if entry.day_count > base)
                if not lost:
                    del stale[(kid, acct, pid, day_text, area)]
                    continue
                pipe = self.redis.pipeline(transaction=False)
                metering.add_calls(pipe, kid, acct, pid, day, area, lost)
                pipe.execute()
                del stale[(kid, acct, pid, day_text, area)]  # done: not to be re-journaled on a later error
                replayed += lost
        return replayed
