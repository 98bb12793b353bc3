"""One Redis reader per process for all its open streams, on the limits Redis (LIMITS_REDIS_URL).

A stream used to wait in an XREAD BLOCK of its own, holding one Redis connection for its whole
life: 50 streams, 50 connections per process. Here a reader task per connection XREADs the keys of
every stream open on the event loop and hands each stream what is new for it (its own cursors, so
a stream resuming from an older Last-Event-ID shares the read); a stream that ends unsubscribes.

On one Redis there is one reader: one XREAD BLOCK over all the keys. A new subscription wakes it
with CLIENT UNBLOCK, sent on the command connections, so its keys are read at once. On a Redis
Cluster a multi-key XREAD must stay in one slot, and a connection can block on one command only:
there is one reader per primary holding streams' keys, which blocks when its keys are all in one
slot, and otherwise sends one XREAD per slot, pipelined, every POLL_SECONDS while nothing comes.

The short commands (the slots, the cursors, renewals) go through one client whose connections
are bounded by COMMANDS_AT_ONCE in flight, so they do not grow with the streams either.
"""

import asyncio
import contextlib
import logging
import urllib.parse
import weakref
from collections import defaultdict

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster
from redis.crc import key_slot

log = logging.getLogger(__name__)

READ_COUNT = 100
BLOCK_MS = 10_000
POLL_SECONDS = 0.2
COMMANDS_AT_ONCE = 4
# Read batches a stream may hold unsent (its client reads slowly) before it ends: it resumes
# from its Last-Event-ID on reconnecting, so nothing is lost, and nothing grows without bound.
MAX_PENDING = 1_000
UNBLOCK_TRIES = 100  # 5 ms apart: the XREAD is sent but not yet blocked on the server
UNAVAILABLE = (redis.RedisError, redis.exceptions.RedisClusterException)


class FellBehind(redis.RedisError):
    """The stream's client read slower than its events came (MAX_PENDING)."""


class Stopping(Exception):
    """The process serving the stream is stopping (a deploy, a restart, a worker recycled)."""


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _bytes(entry_id: str | bytes) -> bytes:
    return entry_id if isinstance(entry_id, bytes) else entry_id.encode()


class Subscription:
    """One stream's keys, its cursor on each and what was read for it (batches of (key, entries))."""

    def __init__(self, cursors: dict[str, str | bytes]):
        self.cursors = {key: _bytes(cursor) for key, cursor in cursors.items()}
        self.queue: asyncio.Queue = asyncio.Queue()
        self.failed = False

    def offer(self, key: str, entries: list) -> None:
        if self.failed:
            return
        after = _order(self.cursors[key])
        fresh = [(entry_id, fields) for entry_id, fields in entries if _order(entry_id) > after]
        if not fresh:
            return
        self.cursors[key] = fresh[-1][0]
        if self.queue.qsize() >= MAX_PENDING:
            self.fail(FellBehind("the stream's client reads slower than its events come"))
            return
        self.queue.put_nowait((key, fresh))

    def fail(self, error: Exception) -> None:
        if not self.failed:
            self.failed = True
            self.queue.put_nowait(error)

    async def next(self, timeout: float) -> list[tuple[str, list]]:
        """What was read since the last call, waiting up to `timeout` for something; raises the
        reader's error (Redis unavailable) or FellBehind."""
        try:
            items = [await asyncio.wait_for(self.queue.get(), max(timeout, 0))]
        except TimeoutError:
            return []
        while not self.queue.empty():
            items.append(self.queue.get_nowait())
        for item in items:
            if isinstance(item, Exception):
                raise item
        return items


class _Reader:
    """One connection and the streams' keys read on it: all of them on one Redis, one primary's on
    a cluster."""

    def __init__(self, hub: "Hub", url: str, node=None):
        self.hub = hub
        self.node = node
        # One connection (a pool of one, so that pipelines take it too; only this reader's task
        # sends on it, one command at a time), the read timeout above the longest block.
        self.r = aioredis.Redis.from_url(
            url, max_connections=1, socket_timeout=BLOCK_MS / 1000 + 5, socket_connect_timeout=0.5
        )
        self.keys: dict[str, set[Subscription]] = defaultdict(set)
        self.generation = 0  # counts changes of `keys`: a blocked read of an older one is woken
        self.blocked: tuple[int, int] | None = None  # (client id, generation) while in XREAD BLOCK
        self.changed = asyncio.Event()
        self.task: asyncio.Task | None = None

    def add(self, key: str, subscription: Subscription) -> None:
        self.keys[key].add(subscription)
        self._changed()

    def remove(self, key: str, subscription: Subscription) -> None:
        subscribers = self.keys.get(key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self.keys[key]
        if not self.keys:  # the last stream left: the reader ends and closes its connection now
            self._changed()
        # Otherwise a key nobody reads any more is read until the next change: what comes is dropped.

    def _changed(self) -> None:
        self.generation += 1
        self.changed.set()
        if self.keys and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self.run())
        elif self.blocked is not None:
            self.hub.spawn(self.wake())

    async def wake(self) -> None:
        """End the blocked XREAD (it returns nothing) so the next one reads the keys as they are now."""
        for _ in range(UNBLOCK_TRIES):
            blocked = self.blocked
            if blocked is None or blocked[1] >= self.generation:
                return
            with contextlib.suppress(*UNAVAILABLE):  # the read ends by its BLOCK timeout instead
                async with self.hub.commands() as r:
                    target = {"target_nodes": self.node} if self.node is not None else {}
                    if await r.execute_command("CLIENT UNBLOCK", blocked[0], **target):
                        return
            await asyncio.sleep(0.005)

    def _groups(self) -> list[dict[str, bytes]]:
        """{key: the oldest cursor a subscriber has on it}, one dict per slot (one on a plain Redis)."""
        groups: dict[int, dict[str, bytes]] = defaultdict(dict)
        for key, subscribers in self.keys.items():
            slot = key_slot(key.encode()) if self.node is not None else 0
            groups[slot][key] = min((s.cursors[key] for s in subscribers), key=_order)
        return list(groups.values())

    async def run(self) -> None:
        try:
            while self.keys:
                self.changed.clear()
                groups = self._groups()
                if len(groups) == 1:
                    generation = self.generation
                    self.blocked = (await self.r.client_id(), generation)
                    if generation != self.generation:  # changed while asking: no wake was sent
                        self.blocked = None
                        continue
                    try:
                        replies = await self.r.xread(groups[0], count=READ_COUNT, block=BLOCK_MS)
                    finally:
                        self.blocked = None
                else:
                    pipe = self.r.pipeline(transaction=False)
                    for group in groups:
                        pipe.xread(group, count=READ_COUNT)
                    replies = [reply for replies in await pipe.execute() for reply in replies or ()]
                    if not replies:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.changed.wait(), POLL_SECONDS)
                for key, entries in replies or ():
                    for subscription in list(self.keys.get(key.decode(), ())):
                        subscription.offer(key.decode(), entries)
        except Exception as err:  # noqa: BLE001  every stream on this connection ends and reconnects
            if not isinstance(err, UNAVAILABLE):
                log.exception("stream reader failed")
            for subscribers in self.keys.values():
                for subscription in subscribers:
                    subscription.fail(err if isinstance(err, UNAVAILABLE) else redis.RedisError(str(err)))
            self.keys.clear()
            self.hub.lost(self)
        finally:
            self.hub.idle(self)  # before any await: a stream subscribing from now on gets a new reader
            with contextlib.suppress(*UNAVAILABLE):
                await self.r.aclose()


class Hub:
    """The streams' Redis on one event loop: the command client and the readers."""

    def __init__(self, url: str, cluster: bool, command_timeout: float):
        self.url = url
        self.cluster = cluster
        if cluster:
            self.client = redis.asyncio.cluster.RedisCluster.from_url(
                url, socket_timeout=command_timeout, socket_connect_timeout=0.5
            )
        else:
            self.client = aioredis.Redis.from_url(
                url,
                socket_timeout=command_timeout,
                socket_connect_timeout=0.5,
                health_check_interval=30,
                max_connections=COMMANDS_AT_ONCE + 1,  # +1: the pool counts a connection being released
            )
        self._turns = asyncio.Semaphore(COMMANDS_AT_ONCE)
        self.readers: dict[str | None, _Reader] = {}
        self._tasks: set[asyncio.Task] = set()
        self.stopping = False  # the process is stopping: streams end, new ones at once

    @contextlib.asynccontextmanager
    async def commands(self):
        """The command client, at most COMMANDS_AT_ONCE commands in flight (so as many connections)."""
        async with self._turns:
            yield self.client

    def spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def subscribe(self, cursors: dict[str, str | bytes]) -> Subscription:
        """Read these keys (of one slot) after these cursors for a stream until it unsubscribes."""
        subscription = Subscription(cursors)
        if not self.stopping:
            reader = await self._reader_for(next(iter(cursors)))
            for key in cursors:
                reader.add(key, subscription)
            subscription.reader = reader
        if self.stopping:  # before, or while it waited for its reader: stop_streams did not see it
            subscription.fail(Stopping())
        return subscription

    def stop_streams(self) -> int:
        """End every stream subscribed here, and any that subscribes after: each gets Stopping from
        its next read. Returns how many were open."""
        self.stopping = True
        open_now = {s for reader in self.readers.values() for subs in reader.keys.values() for s in subs}
        for subscription in open_now:
            subscription.fail(Stopping())
        return len(open_now)

    def unsubscribe(self, subscription: Subscription) -> None:
        reader = getattr(subscription, "reader", None)
        if reader is not None:
            for key in subscription.cursors:
                reader.remove(key, subscription)

    async def _reader_for(self, key: str) -> _Reader:
        node = None
        if self.cluster:
            await self.client.initialize()
            node = self.client.get_node_from_key(key)
        name = node.name if node is not None else None
        reader = self.readers.get(name)
        if reader is None:
            reader = self.readers[name] = _Reader(self, _node_url(self.url, node), node)
        return reader

    def idle(self, reader: _Reader) -> None:
        """A reader with no keys left has closed its connection: the next stream starts another."""
        name = reader.node.name if reader.node is not None else None
        if self.readers.get(name) is reader and not reader.keys:
            del self.readers[name]

    def lost(self, reader: _Reader) -> None:
        """A reader's connection failed: on a cluster the slot map may have changed (a failover)."""
        if self.cluster:
            self.spawn(self._refresh())

    async def _refresh(self) -> None:
        with contextlib.suppress(*UNAVAILABLE):
            await self.client.nodes_manager.initialize()


def _node_url(url: str, node) -> str:
    """The URL with a cluster node's address (its credentials and TLS settings kept)."""
    if node is None:
        return url
    parts = urllib.parse.urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    host = f"[{node.host}]" if ":" in node.host else node.host
    netloc = f"{credentials}@{host}:{node.port}" if credentials else f"{host}:{node.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub(url: str, cluster: bool, command_timeout: float) -> Hub:
    """This event loop's hub for the streams on the Redis at `url`."""
    per_loop = _hubs.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(url)
    if found is None:
        found = per_loop[url] = Hub(url, cluster, command_timeout)
    return found


def stop_streams() -> int:
    """End the streams open on this event loop, as its server stops: each sends its `end` event and
    finishes, so the server has nothing to cut. Returns how many were open."""
    return sum(found.stop_streams() for found in _hubs.get(asyncio.get_running_loop(), {}).values())
