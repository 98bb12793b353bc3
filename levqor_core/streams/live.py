"""Serving a stream on the event loop: a slot among the account's open streams, then Server-Sent
Events read from the account's Redis Streams (levqor_core.streams.feed) on the limits Redis.

A stream holds no thread and no Redis connection: the process's reader (levqor_core.streams.hub)
reads its feed and its account's control stream with every other stream's, and the stream's
generator waits for what was read for it, at most a heartbeat at a time. Each
heartbeat (a comment line) renews its slot, so a process killed mid-stream frees it within
SLOT_TTL_HEARTBEATS heartbeats, and a client gone silently is found when the write fails. A stream
that carried nothing for the idle timeout ends with an `end` event (the CLI reconnects); one whose
key is retired ends at once with a `revoked` event (the control stream, read by the same XREAD).

The wire format (documented in the spec, `components/responses/EventStream`):

    id: <Redis stream id>      (send it back as Last-Event-ID to resume within the window)
    event: ready | webhook | request | revoked | end
    data: <one line of JSON>
"""

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from levqor_core import problems
from levqor_core.streams import feed
from levqor_core.streams.hub import UNAVAILABLE, FellBehind, Hub, Stopping

SLOT_TTL_HEARTBEATS = 3
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

# KEYS[1] the account's open streams (sorted set: stream id -> when its slot lapses)
# ARGV: now, slot ttl, the tier's limit, this stream's id. 1 when taken, 0 when the tier's limit is reached.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""


class StreamLimitReached(problems.TooManyRequests):
    slug, title = "stream-limit-reached", "Too many open streams"


class StreamIdInvalid(problems.BadRequest):
    slug, title = "invalid-last-event-id", "Invalid Last-Event-ID"


@dataclass(frozen=True)
class Timing:
    heartbeat: float
    idle: float

    @property
    def slot_ttl(self) -> float:
        return self.heartbeat * SLOT_TTL_HEARTBEATS


def resume_from(last_event_id: str | None) -> str | None:
    """The stream id to resume after, from a Last-Event-ID header (400 if it is not one of ours)."""
    if not last_event_id:
        return None
    if not STREAM_ID.match(last_event_id.strip()):
        raise StreamIdInvalid("Last-Event-ID must be the `id` of an event this stream sent (e.g. 1765097000000-0).")
    return last_event_id.strip()


async def take_slot(hub: Hub, account_id: int, limit: int, timing: Timing) -> str:
    """A slot among the account's open streams, or StreamLimitReached (429)."""
    stream_id = uuid.uuid4().hex
    async with hub.commands() as r:
        taken = await r.eval(
            _TAKE_SLOT, 1, feed.slots_key(account_id), repr(time.time()), timing.slot_ttl, limit, stream_id
        )
    if not taken:
        raise StreamLimitReached(
            f"Your plan allows {limit} open streams at once; close one (or wait {timing.slot_ttl:g} s for a "
            "dropped one to lapse).",
            headers={"Retry-After": str(int(timing.heartbeat))},
            limit=limit,
        )
    return stream_id


async def _renew_slot(hub: Hub, account_id: int, stream_id: str, timing: Timing) -> None:
    key = feed.slots_key(account_id)
    async with hub.commands() as r:
        pipe = r.pipeline(transaction=False)
        pipe.zadd(key, {stream_id: time.time() + timing.slot_ttl}, xx=True)
        pipe.expire(key, int(timing.slot_ttl) + 1)
        await pipe.execute()


async def release_slot(hub: Hub, account_id: int, stream_id: str) -> None:
    async with hub.commands() as r:
        await r.zrem(feed.slots_key(account_id), stream_id)


def sse(event: str, data: dict, event_id: str | bytes | None = None) -> bytes:
    """One Server-Sent Event; `data` is one line of JSON."""
    head = f"id: {event_id.decode() if isinstance(event_id, bytes) else event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def sse_raw(event: str, data: bytes, event_id: bytes) -> bytes:
    """One Server-Sent Event whose data is already one line of JSON (no parse, no re-encoding)."""
    return b"id: " + event_id + b"\nevent: " + event.encode() + b"\ndata: " + data + b"\n\n"


async def _last_id(r, key: str) -> str:
    newest = await r.xrevrange(key, count=1)
    return newest[0][0].decode() if newest else "0-0"


# What a stream makes of one entry of its feed: the SSE bytes to send, or None to skip it.
Render = Callable[[bytes, dict], bytes | None]


async def serve(
    hub: Hub,
    *,
    account_id: int,
    key_id: str | None,
    feed_key: str,
    after: str | None,
    render: Render,
    timing: Timing,
    stream_id: str,
    ready: dict,
    on_heartbeat: Callable[[], object] | None = None,
    on_close: Callable[[], object] | None = None,
    grace_ends: float | None = None,
) -> AsyncIterator[bytes]:
    """The stream's events until the client leaves, the idle timeout passes or the key is retired
    (revoked, or past the end of its grace period: `grace_ends`, epoch seconds, when the key was
    rolled before the stream opened; the control stream says when if it is rolled later); the slot
    is released whatever ends it."""
    control = feed.control_key(account_id)
    loop = asyncio.get_running_loop()
    subscription = None
    try:
        async with hub.commands() as r:
            cursor = after or await _last_id(r, feed_key)
            control_cursor = await _last_id(r, control)
        subscription = await hub.subscribe({feed_key: cursor, control: control_cursor})
        # The `ready` event carries the cursor: a client dropped before any event resumes from here.
        yield b"retry: 1000\n\n" + sse("ready", ready | {"heartbeat_seconds": timing.heartbeat}, cursor)
        last_event = last_renewal = loop.time()
        while True:
            wait = last_renewal + timing.heartbeat - loop.time()
            if grace_ends is not None:
                wait = min(wait, grace_ends - time.time())
            read = await subscription.next(wait)
            now = loop.time()
            batch: list[bytes] = []  # one write for what was read, not one per event
            for key, entries in read:
                if key == control:
                    for _, fields in entries:
                        if key_id is not None and fields.get(feed.RETIRED_FIELD, b"").decode() == key_id:
                            detail = "The API key this stream authenticated with was revoked; nothing more is sent."
                            yield b"".join(batch) + sse("revoked", {"reason": "key-revoked", "detail": detail})
                            return
                        if key_id is not None and fields.get(feed.KEY_FIELD, b"").decode() == key_id:
                            grace_ends = float(fields[feed.GRACE_ENDS_FIELD])
                    continue
                for entry_id, fields in entries:
                    message = render(entry_id, fields)
                    if message is not None:
                        batch.append(message)
            if grace_ends is not None and time.time() >= grace_ends:
                # What was read before the end is sent; nothing after it.
                detail = (
                    "The API key this stream authenticated with was rolled and its grace period has ended; "
                    "nothing more is sent. Reconnect with the new key."
                )
                yield b"".join(batch) + sse("revoked", {"reason": "key-revoked", "detail": detail})
                return
            if batch:
                last_event = now
                yield b"".join(batch)
            if now - last_event >= timing.idle:
                yield sse("end", {"reason": "idle", "detail": f"No event for {timing.idle:g} s; reconnect to go on."})
                return
            if now - last_renewal >= timing.heartbeat:
                await _renew_slot(hub, account_id, stream_id, timing)
                if on_heartbeat is not None:
                    await on_heartbeat()
                last_renewal = now
                yield b": heartbeat\n\n"
    except FellBehind:
        detail = "This stream's client read slower than its events came; reconnect with Last-Event-ID."
        yield sse("end", {"reason": "unavailable", "detail": detail})
    except Stopping:
        detail = "The server serving this stream is restarting; reconnect with Last-Event-ID."
        yield sse("end", {"reason": "restarting", "detail": detail})
    except UNAVAILABLE as err:
        yield sse(
            "end",
            {
                "reason": "unavailable",
                "detail": f"The stream's store is unavailable ({type(err).__name__}); reconnect.",
            },
        )
    finally:
        if subscription is not None:
            hub.unsubscribe(subscription)
        # Shielded: a client that left cancels this generator, and the slot must still be given back.
        await asyncio.shield(_close(hub, account_id, stream_id, on_close))


async def _close(hub: Hub, account_id: int, stream_id: str, on_close) -> None:
    with contextlib.suppress(*UNAVAILABLE):  # else it lapses after its TTL
        await release_slot(hub, account_id, stream_id)
    if on_close is not None:
        await on_close()
