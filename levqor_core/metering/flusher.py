"""Each web process's usage flusher: it persists the Redis counters and keeps them whole.

Every USAGE_FLUSH_SECONDS a thread of the process hands Redis what it missed while unreachable
(the `catch_up` it is given), replays journaled calls a lost Redis took with it, then, if no
other process holds the lock for this interval, copies the counters to `usage_daily`.

The journal holds the calls this process admitted in the last JOURNAL_SECONDS, each numbered by
its key's day counter and tagged with the Redis server's life that counted it (its epoch: the
server's replication id, which a restart and a replica's promotion change, where a key kept in
Redis would have been replicated). When the server holding a key's counters has another life,
the journaled calls numbered above what that life found (the day's base, written by gate.lua or
by the replay: the database's count after an empty restart, the replica's after a failover) are
exactly the ones it never got: those are added back.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import redis
from flask import Flask

from levqor_core import redis_conn
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.periodic_thread import PeriodicThread

log = logging.getLogger(__name__)

FLUSH_LOCK_KEY = "lvq:flush-lock"
# How long an admitted call stays in the journal: many flush intervals, after which a flush has
# persisted it (a Redis restart then re-seeds it from the database).
JOURNAL_SECONDS = 60
# A bound for when the flusher that prunes it does not run (USAGE_FLUSH_SECONDS=0): past it the
# oldest entries go, which only forgoes replaying them after a Redis loss.
JOURNAL_MAX_ENTRIES = 200_000
# A process stopped (a deploy, a restart) while calls it admitted are known only to it (served in
# outage mode, or journaled for a Redis whose life it could not read: a shard mid-failover) ticks
# again at exit until Redis answers, for up to this long: well inside the platform's grace
# between SIGTERM and SIGKILL (Heroku's 30 s), longer than a failover's election takes.
EXIT_WAIT_SECONDS = 10


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
    def __init__(
        self,
        app: Flask,
        r: redis.Redis,
        flush_seconds: float,
        catch_up: Callable[[], None],
        caught_up: Callable[[], bool] = lambda: True,
    ):
        self.app = app
        self.redis = r
        self.flush_seconds = flush_seconds
        self.catch_up = catch_up
        self.caught_up = caught_up  # whether catch_up has nothing left to hand Redis
        self.journal: deque[JournalEntry] = deque(maxlen=JOURNAL_MAX_ENTRIES)
        self._replay_deferred = False  # the last tick could not read Redis's life for the journal
        # A worker stopped by its server (a deploy, max-requests) soon after Redis came back empty
        # replays its journal at exit: the calls only it remembers are not lost with it. While
        # Redis does not answer (a shard failing over) it waits for it (EXIT_WAIT_SECONDS).
        self.thread = PeriodicThread("usage-flush", flush_seconds, self._tick, last_tick=self._last_tick)

    def start(self) -> None:
        self.thread.start()

    def tick(self) -> None:
        """One interval's work: replay the journal, hand Redis the calls admitted during an outage
        once it answers (even if this process gets no more calls), then persist usage."""
        self.thread.tick()

    def _tick(self) -> None:
        # The journal first: a new life's day base must be what it found, not that plus the
        # outage's calls handed to it just before.
        try:
            self._replay_journal()
            self._replay_deferred = False
        except redis_conn.UNAVAILABLE as err:
            self._replay_deferred = True
            log.warning("journal replay deferred, redis unavailable: %s", err)
        self.catch_up()
        try:
            # One process flushes per interval; the others skip.
            if self.redis.set(FLUSH_LOCK_KEY, "1", nx=True, px=int(self.flush_seconds * 900) or 1):
                with self.app.app_context():
                    metering.flush_usage(self.redis)
        except redis_conn.UNAVAILABLE as err:
            log.warning("usage flush skipped, redis unavailable: %s", err)

    def holding(self) -> bool:
        """Whether calls this process admitted are known only to it: served in outage mode and not
        handed to Redis yet, or journaled for a Redis whose life the last tick could not read."""
        return self._replay_deferred or not self.caught_up()

    def _last_tick(self) -> None:
        """At exit: a tick, and more while this process holds calls Redis has not had, until it
        answers or EXIT_WAIT_SECONDS pass (what is held then is lost with the process)."""
        deadline = time.monotonic() + EXIT_WAIT_SECONDS
        self._tick()
        while self.holding() and time.monotonic() < deadline:
            time.sleep(0.5)
            self._tick()
        if self.holding():
            log.warning(
                "exiting with calls redis has not had (it did not answer within %s s): they are lost",
                EXIT_WAIT_SECONDS,
            )

    def _replay_journal(self) -> None:
        """Prune the journal; if Redis lost the counters since (a new epoch), add back the calls
        journaled under the old one that the database had not seen."""
        if not self.journal:
            return
        epochs = metering.epochs(self.redis, {metering.tag(entry.account_id) for entry in list(self.journal)})
        horizon = time.time() - JOURNAL_SECONDS
        stale: dict[tuple, list] = {}
        kept = []
        while self.journal:
            entry = self.journal.popleft()
            # A call journaled after the epochs were read counts in the life they name (or a newer
            # one, replayed next tick): never one before them.
            if entry.epoch != epochs.get(metering.tag(entry.account_id), entry.epoch):
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
                # Seeds what this Redis lacks (nx); the base is what this life found, so the calls
                # numbered above it are the ones it never got.
                metering.seed_counters(self.redis, account, kid, datetime.now(UTC))
                metering.seed_day(self.redis, acct, kid, day)
                base = metering.rebase(self.redis, acct, kid, day)[field]
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
