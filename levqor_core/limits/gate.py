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
"""

import asyncio
import functools
import ipaddress
import logging
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path

import redis
from flask import Flask, current_app

from levqor_core import tiers
from levqor_core.keys import format as keyfmt
from levqor_core.limits import refusals
from levqor_core.limits.degraded import Outage
from levqor_core.limits.headers import BURST, rate_limit_headers
from levqor_core.limits.key_cache import KeyCache, record_key
from levqor_core.metering import counters as metering
from levqor_core.metering.flusher import UsageFlusher
from levqor_core.redis_scripts import ScriptClient

log = logging.getLogger(__name__)

_SCRIPT = (Path(__file__).with_name("gate.lua")).read_text()


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


def failures_key(client: str, now: float) -> str:
    return f"lvq:f:{client}:{int(now) // 60}"


def _script_keys(key_hash: str, client: str | None, now: float) -> list[str]:
    return [record_key(key_hash), failures_key(client, now)] if client else [record_key(key_hash)]


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
    return [
        area,
        repr(now),
        *_calendar_args(int(now)),
        refusals.FAILED_AUTH_PER_MINUTE,
        refusals.failed_auth_reset(now),
    ]


class _Blocking:
    """The sequence's steps for a caller off the event loop: each is done when awaited, in the
    caller's thread (so the sequence never suspends)."""

    def __init__(self, r: redis.Redis):
        self._script = r.register_script(_SCRIPT)

    async def script(self, keys: list, args: list):
        return self._script(keys=keys, args=args)

    @staticmethod
    async def in_thread(fn, *args):
        return fn(*args)


class _OnEventLoop:
    """The sequence's steps on an event loop: gate.lua awaited on the loop's own script client
    (levqor_core.redis_scripts), blocking steps in a worker thread."""

    in_thread = staticmethod(asyncio.to_thread)

    def __init__(self, client: ScriptClient):
        self.script = client.register_script(_SCRIPT)


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

    def __init__(self, app: Flask, r: redis.Redis, flush_seconds: float, async_client_factory=None):
        self.records = KeyCache(app, r)
        self.outage = Outage(app, r, self.records)
        self.flusher = UsageFlusher(app, r, flush_seconds, catch_up=self.catch_up)
        self._blocking = _Blocking(r)
        self._async_client_factory = async_client_factory
        self._on_loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def authorize_async(
        self, raw_key: str, area: str, now: float | None = None, client: str | None = None
    ) -> dict:
        """Admit one call in `area` (v1 | sandbox | meta) or raise the matching problem; `client`
        (the caller's address) has its failed authentications throttled."""
        steps = self._on_loops.get(asyncio.get_running_loop()) or self._steps_for_this_loop()
        return await self._admit(steps, _hash_of(raw_key), area, now, client)

    def authorize_hash(self, key_hash: str, area: str, now: float | None = None, client: str | None = None) -> dict:
        """Admit one call for the key with this hash, off the event loop: the portal uses it to run
        sandbox calls for a signed-in developer without ever holding the raw key."""
        return _run_to_end(self._admit(self._blocking, key_hash, area, now, client))

    def _steps_for_this_loop(self) -> _OnEventLoop:
        """One asyncio client per event loop (a test client may run several loops)."""
        steps = _OnEventLoop(self._async_client_factory())
        self._on_loops[asyncio.get_running_loop()] = steps
        return steps

    async def _admit(self, steps, key_hash: str, area: str, now: float | None, client: str | None) -> dict:
        """The one admission sequence: gate.lua; on a miss, fill the key's record and run it again;
        then hand Redis what it missed while away; without Redis, admit from the database."""
        self.flusher.start()
        now = time.time() if now is None else now
        client = client_bucket(client)
        keys, args = _script_keys(key_hash, client, now), script_args(area, now)
        try:
            result = await steps.script(keys, args)
            if result[0] == b"miss":
                await steps.in_thread(self.records.fill, key_hash, now)
                result = await steps.script(keys, args)
            if self.outage.pending or self.records.unsent_forgets:
                await steps.in_thread(self.catch_up)
        except redis.RedisError as err:
            log.warning("redis unavailable, gate degraded: %s", err)
            return await steps.in_thread(self.outage.admit, key_hash, area, now, client)
        return self._verdict(result, area, now)

    def catch_up(self) -> None:
        """Hand Redis what it missed while unreachable: forgotten key records, then the calls
        admitted meanwhile (both kept for later if it still does not answer)."""
        self.records.send_unsent_forgets()
        self.outage.replay()

    def _verdict(self, result, area: str, now: float) -> dict:
        verdict = result[0].decode()
        if verdict == "guessing":
            raise refusals.throttled(now)
        if verdict in ("unknown", "miss"):
            raise refusals.unknown_key()
        if verdict == "expired":
            refusal = refusals.grace_over()
            refusal.caller = _caller(result)
            raise refusal
        limit, remaining, reset, burst, burst_left = (int(x) for x in result[1:6])
        # A burst refusal reports the per-second window: the quota was not consulted.
        headers = rate_limit_headers(
            BURST if verdict == "burst" else area, limit, remaining, reset, burst, burst_left, now
        )
        if verdict == "ok":
            if len(result) > 8:  # a metered call: journal it (see metering.flusher)
                self.flusher.journal.append(
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
        headers["Retry-After"] = refusals.retry_after(reset, now)
        if verdict == "burst":
            refusal = refusals.over_burst(burst, headers)
        else:
            refusal = refusals.over_quota(area, limit, headers)
        # A valid key refused by its limits is still its account's call (the request log shows it).
        refusal.caller = _caller(result)
        raise refusal


def _caller(result) -> dict:
    """Whose key a refused call used, from gate.lua's answer."""
    return {"account_id": int(result[6]), "key_id": result[7].decode()}


def _hash_of(raw_key: str) -> str:
    """The stored hash of a key, after refusing a malformed or mistyped one without any lookup."""
    if not keyfmt.is_well_formed(raw_key):
        raise refusals.malformed_key()
    return keyfmt.hash_key(raw_key)


def current() -> Gate:
    """The gate of the app in context."""
    return current_app.extensions["levqor.gate"]
