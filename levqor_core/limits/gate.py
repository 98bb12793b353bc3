"""The API's front gate: authenticates a key and applies burst limit, quota and metering.

An authorised request costs one Redis round trip (gate.lua) and no SQL once the key's record is
cached in Redis (key_cache). While Redis is unreachable the gate admits calls from the database
instead (degraded). Each process's usage flusher (metering.flusher) persists what gate.lua
counted, from a journal of the calls this process admitted if Redis lost them.

Admission is one sequence, `Gate._admit`, with two doors: `authorize_async` for the API's
security check on the event loop (every API call), and `authorize_hash` for callers off the loop
(the portal's sandbox calls). The sequence awaits its steps: a gate.lua run, or a blocking step
such as a cache fill. On the event loop they really wait (Redis on the loop's asyncio client, the
database in a worker thread); for the blocking door they finish at once in the caller's thread,
so that door runs the same coroutine to its end without an event loop.

Each call carries an id (gate.lua's ARGV[9]), which gate.lua notes with the count. When the script
was sent but its reply never came (the primary died after running it), the outage mode admits the
call as uncertain, and its replay asks the server that then answers whether it holds the id: a
call counted before its primary died and replicated is not counted again (degraded).
"""

import asyncio
import functools
import ipaddress
import itertools
import logging
import os
import secrets
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import redis
from flask import Flask, current_app

from levqor_core import redis_conn, tiers
from levqor_core.apijobs import poll_cache
from levqor_core.keys import format as keyfmt
from levqor_core.limits import refusals
from levqor_core.limits.degraded import Outage
from levqor_core.limits.headers import BURST, rate_limit_headers
from levqor_core.limits.key_cache import KeyCache, Owner, locator_key, parse_locator, record_key
from levqor_core.metering import counters as metering
from levqor_core.metering.flusher import JournalEntry, UsageFlusher
from levqor_core.redis_scripts import ReplyLost, ScriptClient

log = logging.getLogger(__name__)

_SCRIPT = (Path(__file__).with_name("gate.lua")).read_text()
# The failed-authentication throttle, per caller address: a call of its own (its key is the
# address's, in no account's slot), made only for a key that is not known to be valid.
# KEYS[1] the address's failures this minute; ARGV[1] 1: count one more failure, 0: only look;
# ARGV[2] failures allowed. Returns 1 when the address is over them.
_THROTTLE = """
local failed
if ARGV[1] == '1' then
  failed = redis.call('INCR', KEYS[1]) - 1
  if failed == 0 then redis.call('EXPIRE', KEYS[1], 120) end
else
  failed = tonumber(redis.call('GET', KEYS[1]) or '0')
end
if failed >= tonumber(ARGV[2]) then return 1 end
return 0
"""
_LOCATE = "return redis.call('GET', KEYS[1])"


@functools.lru_cache(maxsize=4096)  # parsing the address was ~5% of the gate's own CPU
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


class _CallIds:
    """Ids for gate calls, unique across processes: a random prefix per process (drawn again in a
    forked child) and a counter; cheaper than drawing random bytes per call."""

    def __init__(self):
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(4)  # unique among the 64 ids a key's ring holds
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


call_ids = _CallIds()


def failures_key(client: str, now: float) -> str:
    return f"lvq:f:{client}:{int(now) // 60}"


def script_keys(owner: Owner, key_hash: str, now: float, period_id: str, job_id: str | None = None) -> list[str]:
    """gate.lua's KEYS: all under the account's hash tag (one slot); a job poll's two more."""
    account_id, key_id = owner
    day = _calendar_args(int(now))[2]
    polled = poll_cache.gate_keys(account_id, job_id) if job_id else []
    return [
        record_key(account_id, key_hash),
        metering.burst_key(account_id, key_id, int(now)),
        metering.usage_key(account_id, period_id),
        f"lvq:{metering.tag(account_id)}:d:{key_id}:{day}",
        f"lvq:{metering.tag(account_id)}:s:{key_id}:{day}",
        f"lvq:{metering.tag(account_id)}:base:{key_id}:{day}",
        metering.dirty_key(account_id),
        metering.epoch_key(account_id),
        *polled,
    ]


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


def script_args(area: str, now: float, period_id: str, call_id: str) -> list:
    """gate.lua's ARGV; the calendar part only changes once a second."""
    return [area, repr(now), *_calendar_args(int(now)), period_id, call_id]


class ScriptReply(NamedTuple):
    """gate.lua's answer (see its header), by name. Refusals before a key is known carry only the
    verdict (and the throttle's figures); a refusal by the key's limits also names its caller; a
    metered call also what the journal needs."""

    verdict: str
    limit: int = 0
    remaining: int = 0
    reset: int = 0
    burst: int = 0
    burst_remaining: int = 0
    account_id: int | None = None
    key_id: str | None = None
    epoch: bytes | None = None
    day_count: int | None = None
    period_id: bytes | None = None
    job: bytes | None = None  # a metered job poll's offer (levqor_core.apijobs.poll_cache)

    @classmethod
    def parse(cls, raw: list) -> "ScriptReply":
        verdict = raw[0].decode()
        if len(raw) < 6:
            return cls(verdict)
        figures = (int(x) for x in raw[1:6])
        if len(raw) < 8:
            return cls(verdict, *figures)
        caller = (int(raw[6]), raw[7].decode())
        if len(raw) < 11:
            return cls(verdict, *figures, *caller)
        return cls(verdict, *figures, *caller, raw[8], int(raw[9]), raw[10], raw[11] if len(raw) > 11 else None)

    @property
    def caller(self) -> dict:
        """Whose key the call used (the request log shows refused calls too)."""
        return {"account_id": self.account_id, "key_id": self.key_id}


class _Blocking:
    """The sequence's steps for a caller off the event loop: each is done when awaited, in the
    caller's thread (so the sequence never suspends)."""

    # redis-py does not say whether a command was sent before the connection failed: any failure
    # may be a lost reply.
    lost_reply = redis_conn.UNAVAILABLE

    def __init__(self, r: redis.Redis):
        self._script = r.register_script(_SCRIPT)
        self._throttle = r.register_script(_THROTTLE)
        self._locate = r.register_script(_LOCATE)

    async def script(self, keys: list, args: list):
        return self._script(keys=keys, args=args)

    async def throttle(self, keys: list, args: list):
        return self._throttle(keys=keys, args=args)

    async def locate(self, keys: list, args: list):
        return self._locate(keys=keys, args=args)

    @staticmethod
    async def in_thread(fn, *args):
        return fn(*args)


class _OnEventLoop:
    """The sequence's steps on an event loop: gate.lua awaited on the loop's own script client
    (levqor_core.redis_scripts), blocking steps in a worker thread."""

    in_thread = staticmethod(asyncio.to_thread)
    lost_reply = ReplyLost  # sent, no reply: the others were never sent (the script did not run)

    def __init__(self, client: ScriptClient):
        self.script = client.register_script(_SCRIPT)
        self.throttle = client.register_script(_THROTTLE)
        self.locate = client.register_script(_LOCATE)


def _run_to_end(sequence):
    """The result of a coroutine none of whose awaits suspends, with no event loop."""
    try:
        sequence.send(None)
    except StopIteration as finished:
        return finished.value
    sequence.close()
    raise RuntimeError("a blocking gate step suspended")


class Gate:
    """One per app: the admission sequence and the parts it uses (records, outage mode, flusher)."""

    def __init__(
        self,
        app: Flask,
        r: redis.Redis,
        flush_seconds: float,
        async_client_factory=None,
        script_redis: redis.Redis | None = None,
    ):
        """`script_redis`: the blocking door's client for the scripts (the same server as `r`),
        one that never sends a command again once its connection failed (redis_conn.client)."""
        self.records = KeyCache(app, r)
        self.outage = Outage(app, r, self.records, journal=self._journal_recount)
        self.flusher = UsageFlusher(
            app,
            r,
            flush_seconds,
            catch_up=self.catch_up,
            caught_up=lambda: not (self.outage.waiting or self.records.unsent_forgets),
        )
        self._blocking = _Blocking(script_redis or r)
        self._async_client_factory = async_client_factory
        self._on_loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Key hash → the paid period its last call counted in (calendar periods are not kept):
        # gate.lua's usage counter is named by the caller, and a wrong guess costs one more run.
        self._periods: dict[str, str] = {}

    async def authorize_async(
        self,
        raw_key: str,
        area: str,
        now: float | None = None,
        client: str | None = None,
        job_id: str | None = None,
    ) -> dict:
        """Admit one call in `area` (v1 | sandbox | meta) or raise the matching problem; `client`
        (the caller's address) has its failed authentications throttled. A v1 call polling job
        `job_id` also gets the job's held answer, or how to hold one (`job_poll`: poll_cache)."""
        steps = self._on_loops.get(asyncio.get_running_loop()) or self._steps_for_this_loop()
        return await self._admit(steps, _hash_of(raw_key), area, now, client, job_id)

    def authorize_hash(self, key_hash: str, area: str, now: float | None = None, client: str | None = None) -> dict:
        """Admit one call for the key with this hash, off the event loop: the portal uses it to run
        sandbox calls for a signed-in developer without ever holding the raw key."""
        return _run_to_end(self._admit(self._blocking, key_hash, area, now, client))

    def _steps_for_this_loop(self) -> _OnEventLoop:
        """One asyncio client per event loop (a test client may run several loops)."""
        steps = _OnEventLoop(self._async_client_factory())
        self._on_loops[asyncio.get_running_loop()] = steps
        return steps

    async def _admit(
        self, steps, key_hash: str, area: str, now: float | None, client: str | None, job_id: str | None = None
    ) -> dict:
        """The one admission sequence: find the key's account (this process's memory, else Redis's
        locator, else the database), then gate.lua; on a miss, fill the key's record and run it
        again; then hand Redis what it missed while away; without Redis, admit from the database."""
        self.flusher.start()
        now = time.time() if now is None else now
        client = client_bucket(client)
        call_id = call_ids.next()
        try:
            owner = self.records.owners.get(key_hash) or await self._locate(steps, key_hash, now, client)
            if owner is None:
                return await self._refuse_unknown(steps, now, client)
            result = await self._run(steps, owner, key_hash, area, now, call_id, job_id)
            if result[0] == b"miss":
                if await steps.in_thread(self.records.fill, key_hash, now, owner) is None:
                    return await self._refuse_unknown(steps, now, client)
                result = await self._run(steps, owner, key_hash, area, now, call_id, job_id)
            if result[0] == b"unknown":
                return await self._refuse_unknown(steps, now, client)
        except redis_conn.UNAVAILABLE as err:
            log.warning("redis unavailable, gate degraded: %s", err)
            # A lost reply may come from a script that counted the call: admitted with its id, it
            # is counted later only if the server then answering does not hold it.
            uncertain = call_id if isinstance(err, steps.lost_reply) else None
            return await steps.in_thread(self.outage.admit, key_hash, area, now, client, uncertain)
        if self.outage.waiting or self.records.unsent_forgets:
            try:
                await steps.in_thread(self.catch_up)
            except redis_conn.UNAVAILABLE as err:  # this call is counted: not one for the outage mode
                log.warning("catch-up deferred, redis unavailable: %s", err)
        return self._verdict(result, area, now)

    async def _locate(self, steps, key_hash: str, now: float, client: str | None) -> Owner | None:
        """The key's owner for a key this process has not seen: Redis's locator, or the database
        (after the caller's address passed the throttle: a guesser is refused before any query)."""
        owner = parse_locator(await steps.locate([locator_key(key_hash)], []))
        if owner is None:
            if client and await steps.throttle([failures_key(client, now)], [0, refusals.FAILED_AUTH_PER_MINUTE]):
                raise refusals.throttled(now)
            owner = await steps.in_thread(self.records.fill, key_hash, now)
        if owner:
            self.records.remember(key_hash, owner)
            return owner
        return None

    async def _refuse_unknown(self, steps, now: float, client: str | None):
        """An unknown key counts against the caller's address; past the allowance it is told no more."""
        if client and await steps.throttle([failures_key(client, now)], [1, refusals.FAILED_AUTH_PER_MINUTE]):
            raise refusals.throttled(now)
        raise refusals.unknown_key()

    async def _run(
        self, steps, owner: Owner, key_hash: str, area: str, now: float, call_id: str, job_id: str | None = None
    ):
        """gate.lua with the usage counter of the period the key counted in last (else the
        calendar's); once more with the right one if the key's period is another."""
        period_id = self._periods.get(key_hash) or _calendar_args(int(now))[0]
        args = script_args(area, now, period_id, call_id)
        result = await steps.script(script_keys(owner, key_hash, now, period_id, job_id), args)
        if result[0] == b"period":
            period_id = result[1].decode()
            if period_id == _calendar_args(int(now))[0]:
                self._periods.pop(key_hash, None)
            else:
                if len(self._periods) >= 10_000:
                    self._periods.clear()
                self._periods[key_hash] = period_id
            args = script_args(area, now, period_id, call_id)
            result = await steps.script(script_keys(owner, key_hash, now, period_id, job_id), args)
        return result

    def catch_up(self) -> None:
        """Hand Redis what it missed while unreachable: forgotten key records, then the calls
        admitted meanwhile (both kept for later if it still does not answer)."""
        self.records.send_unsent_forgets()
        self.outage.replay()

    def _journal_recount(self, counter, recount: metering.Recount) -> None:
        """Journal a lost-reply call once its server counted it (or is found to hold it)."""
        self.flusher.journal.append(
            JournalEntry(
                admitted_at=time.time(),
                key_id=counter.key_id.encode(),
                account_id=counter.account_id,
                period_id=counter.period_id.encode(),
                day=counter.day,
                area=counter.area,
                epoch=recount.epoch,
                day_count=recount.day_count,
            )
        )

    def _verdict(self, raw, area: str, now: float) -> dict:
        reply = ScriptReply.parse(raw)
        if reply.verdict in ("unknown", "miss", "period"):  # a record gone again meanwhile
            raise refusals.unknown_key()
        if reply.verdict == "expired":
            refusal = refusals.grace_over()
            refusal.caller = reply.caller
            raise refusal
        # A burst refusal reports the per-second window: the quota was not consulted.
        headers = rate_limit_headers(
            BURST if reply.verdict == "burst" else area,
            reply.limit,
            reply.remaining,
            reply.reset,
            reply.burst,
            reply.burst_remaining,
            now,
        )
        if reply.verdict == "ok":
            if reply.epoch is not None:  # a metered call: journal it (see metering.flusher)
                self.flusher.journal.append(
                    JournalEntry(
                        admitted_at=now,
                        key_id=raw[7],
                        account_id=reply.account_id,
                        period_id=reply.period_id,
                        day=_calendar_args(int(now))[2],
                        area=area,
                        epoch=reply.epoch,
                        day_count=reply.day_count,
                    )
                )
            admitted = {
                "sub": str(reply.account_id),
                "account_id": reply.account_id,
                "key_id": reply.key_id,
                "headers": headers,
            }
            if reply.job is not None:
                admitted["job_poll"] = (reply.job, reply.epoch)
            return admitted
        headers["Retry-After"] = refusals.retry_after(reply.reset, now)
        if reply.verdict == "burst":
            refusal = refusals.over_burst(reply.burst, headers)
        else:
            refusal = refusals.over_quota(area, reply.limit, headers)
        # A valid key refused by its limits is still its account's call (the request log shows it).
        refusal.caller = reply.caller
        raise refusal


def _hash_of(raw_key: str) -> str:
    """The stored hash of a key, after refusing a malformed or mistyped one without any lookup."""
    if not keyfmt.is_well_formed(raw_key):
        raise refusals.malformed_key()
    return keyfmt.hash_key(raw_key)


def current() -> Gate:
    """The gate of the app in context."""
    return current_app.extensions["levqor.gate"]
