"""A lean asyncio Redis client that only runs Lua scripts: the gate's one round trip per API call.

redis-py's asyncio client spent ~190 µs of CPU on each EVALSHA (a connection pool checkout and
its lock, the retry wrapper, command packing, a pure-Python RESP3 parser reading the reply line
by line through a StreamReader): ~15% of an authorised v1 call. This client keeps one connection
per event loop and pipelines on it: each call writes its command and waits for its reply, which
Redis sends in order. The protocol itself is hiredis's (`pack_command`, `Reader`), the C library
redis-py parses with when it is installed: what is here is only the connection and the order.

Behaviour kept from redis-py, so the gate degrades exactly as before: connection failures raise
`redis.ConnectionError`, a reply slower than the socket timeout `redis.TimeoutError` (the
connection is then dropped, as later replies could not be matched to their calls), error replies
`redis.ResponseError`; nothing is retried once sent (a script may have counted the call), and a
call whose command was sent but whose reply never came (the connection lost, or the timeout) raises
`ReplyLost`, a `redis.ConnectionError`: the gate then cannot know whether the script ran. An
unknown script (`NOSCRIPT`, after Redis restarted empty) is sent again whole with EVAL. A
`READONLY` reply (a primary demoted to a replica while the URL moved to the promoted one: the
script wrote nothing) drops the connection and is sent once more on a new one. AUTH, SELECT and
TLS (its CA, client certificate and checks) follow the URL as redis-py reads it.
"""

import asyncio
import collections
import hashlib
import ssl

import hiredis
import redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.crc import key_slot


class ReplyLost(redis.ConnectionError):
    """The command was sent and no reply came: it may have run (the gate's call may be counted)."""


class ReplyTimedOut(ReplyLost, redis.TimeoutError):
    """No reply within the socket timeout (the command was sent: it may have run)."""


def pack(*args) -> bytes:
    """One command in RESP (hiredis, the C library redis-py itself parses with when installed)."""
    return hiredis.pack_command(args)


def _reader() -> hiredis.Reader:
    # Error replies come back as instances of these (not raised), so each goes to its own call.
    return hiredis.Reader(protocolError=redis.exceptions.InvalidResponse, replyError=redis.ResponseError)


class _Connection(asyncio.Protocol):
    """One pipelined connection: replies resolve the waiting calls in the order they were sent."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.transport = None
        self.reader = _reader()
        self.waiting: collections.deque = collections.deque()
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.reader.feed(data)
        while self.waiting:
            try:
                value = self.reader.gets()
            except redis.RedisError as err:  # not RESP: nothing after it can be matched to a call
                self._fail(ReplyLost(f"unreadable reply from Redis: {err}"))
                return
            if value is False:  # the reply is not complete yet
                return
            future, timer = self.waiting.popleft()
            timer.cancel()
            if not future.done():
                if isinstance(value, redis.ResponseError):
                    future.set_exception(_error(value))
                else:
                    future.set_result(value)

    def connection_lost(self, exc):
        self.lost = True
        self._fail(ReplyLost(f"connection to Redis lost: {exc or 'closed by the server'}"))

    def send(self, packed: bytes) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        timer = loop.call_later(self.timeout, self._timed_out, future)
        self.waiting.append((future, timer))
        self.transport.write(packed)
        return future

    def _timed_out(self, future):
        if not future.done():
            self._fail(ReplyTimedOut(f"no reply from Redis within {self.timeout} s"))

    def _fail(self, error: Exception):
        self.lost = True
        waiting, self.waiting = self.waiting, collections.deque()
        for future, timer in waiting:
            timer.cancel()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


class ScriptClient:
    """Runs registered Lua scripts on one connection, made on first use and again after a loss;
    for use on one event loop."""

    def __init__(self, url: str, timeout: float = 0.5, connect_timeout: float = 0.5):
        self.settings = parse_url(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future | None = None

    def register_script(self, script: str) -> "Script":
        return Script(self, script)

    async def call(self, packed: bytes):
        """Send one packed command and return its reply (raises its error reply)."""
        connection = self._connection
        if connection is None or connection.lost:
            connection = await self._connect()
        try:
            return await self._write(connection, packed)
        except redis.exceptions.ReadOnlyError:
            connection._fail(redis.ConnectionError("the server became a read-only replica"))
            return await self._write(await self._connect(), packed)

    async def _write(self, connection: _Connection, packed: bytes):
        return await connection.send(packed)

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        s = self.settings
        protocol = _Connection(self.timeout)
        try:
            if "path" in s:
                opening = loop.create_unix_connection(lambda: protocol, s["path"])
            else:
                opening = loop.create_connection(
                    lambda: protocol,
                    s.get("host", "localhost"),
                    s.get("port", 6379),
                    ssl=_ssl_context(s) if s.get("connection_class") is SSLConnection else None,
                )
            await asyncio.wait_for(opening, self.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as err:
            raise redis.ConnectionError(f"cannot connect to Redis: {err}") from err
        handshake = []
        if s.get("password"):
            user = [s["username"]] if s.get("username") else []
            handshake.append(protocol.send(pack("AUTH", *user, s["password"])))
        if s.get("db"):
            handshake.append(protocol.send(pack("SELECT", s["db"])))
        try:
            for reply in handshake:
                await reply
        except redis.ResponseError as err:
            protocol.transport.abort()
            raise redis.AuthenticationError(str(err)) from err
        self._connection = protocol
        return protocol


def _ssl_context(settings: dict) -> ssl.SSLContext:
    """As redis-py's SSLConnection reads rediss://: certificates required and the host name checked,
    unless the URL's ssl_cert_reqs / ssl_check_hostname say otherwise; the CA from ssl_ca_certs
    (a file) or ssl_ca_path (a folder) when the URL names one, else the system's store (and
    SSL_CERT_FILE); a client certificate from ssl_certfile and ssl_keyfile."""
    context = ssl.create_default_context(cafile=settings.get("ssl_ca_certs"), capath=settings.get("ssl_ca_path"))
    if settings.get("ssl_certfile"):
        context.load_cert_chain(settings["ssl_certfile"], settings.get("ssl_keyfile"), settings.get("ssl_password"))
    required = settings.get("ssl_cert_reqs", "required")
    if required in ("none", None, ssl.CERT_NONE):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif required in ("optional", ssl.CERT_OPTIONAL):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    elif settings.get("ssl_check_hostname") is False:
        context.check_hostname = False
    return context


def _error(reply: redis.ResponseError) -> redis.ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return redis.exceptions.NoScriptError(message)
    if message.startswith("READONLY"):
        return redis.exceptions.ReadOnlyError(message)
    return reply


class Script:
    """A Lua script run by EVALSHA, sent whole (EVAL) when Redis does not know it yet."""

    def __init__(self, client: ScriptClient, script: str):
        self.client = client
        self.script = script.encode()
        self.sha = hashlib.sha1(self.script, usedforsecurity=False).hexdigest()  # the name Redis gives it

    async def __call__(self, keys=(), args=()):
        try:
            return await self.client.call(pack("EVALSHA", self.sha, len(keys), *keys, *args))
        except redis.exceptions.NoScriptError:
            return await self.client.call(pack("EVAL", self.script, len(keys), *keys, *args))


class ClusterScriptClient:
    """The same client for a Redis Cluster: one ScriptClient per primary, a script routed by its
    first key's slot (every key of a gate call shares it). The slot map is read with CLUSTER SLOTS
    from any node the client knows. Replies that mean the script did not run are followed once:
    MOVED (the slot is elsewhere: the map is read again), ASK (a slot mid-migration: ASKING and the
    script on the node named), CLUSTERDOWN / READONLY / a node that cannot be connected to (the map
    is read again). Anything else, as ScriptClient: nothing is retried once sent, so the gate
    degrades for the accounts of that shard's slots only."""

    def __init__(self, url: str, timeout: float = 0.5, connect_timeout: float = 0.5):
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.seed = ScriptClient(url, timeout, connect_timeout)
        self.nodes: dict[tuple[str, int], ScriptClient] = {}
        self.slots: list[tuple[str, int] | None] = [None] * 16384
        self._refreshing: asyncio.Future | None = None

    def register_script(self, script: str) -> "ClusterScript":
        return ClusterScript(self, script)

    def _node(self, address: tuple[str, int]) -> ScriptClient:
        node = self.nodes.get(address)
        if node is None:
            node = ScriptClient("redis://localhost", self.timeout, self.connect_timeout)
            node.settings = {k: v for k, v in self.seed.settings.items() if k != "path"} | {
                "host": address[0],
                "port": address[1],
            }
            self.nodes[address] = node
        return node

    async def refresh(self) -> None:
        """Read the slot map again (once for every caller waiting meanwhile)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slots())
        await asyncio.shield(self._refreshing)

    async def _read_slots(self) -> None:
        last: Exception | None = None
        for node in [self.seed, *list(self.nodes.values())]:
            try:
                ranges = await node.call(pack("CLUSTER", "SLOTS"))
            except redis.RedisError as err:
                last = err
                continue
            for first, end, primary, *_ in ranges:
                address = (primary[0].decode() or node.settings.get("host", "localhost"), int(primary[1]))
                self._node(address)
                for slot in range(first, end + 1):
                    self.slots[slot] = address
            return
        raise redis.ConnectionError(f"no node of the Redis Cluster answered CLUSTER SLOTS: {last}")

    async def call(self, slot: int, packed: bytes):
        """Send a command for `slot` to the primary serving it; follow a redirection once."""
        if self.slots[slot] is None:
            await self.refresh()
        for attempt in (1, 2):
            node = self._node(self.slots[slot])
            try:
                connection = node._connection
                if connection is None or connection.lost:
                    connection = await node._connect()  # not sent yet: a refresh and a retry are safe
            except redis.ConnectionError:
                if attempt == 2:
                    raise
                await self.refresh()
                continue
            try:
                return await node._write(connection, packed)
            except redis.ResponseError as err:
                message = str(err)
                if attempt == 2 or not message.startswith(("MOVED", "ASK", "CLUSTERDOWN", "READONLY", "TRYAGAIN")):
                    raise
                if message.startswith("ASK "):
                    target = self._node(_address(message))
                    asking = (
                        await target._connect()
                        if target._connection is None or target._connection.lost
                        else target._connection
                    )
                    asking.send(pack("ASKING"))
                    return await target._write(asking, packed)
                if message.startswith("READONLY"):
                    connection._fail(redis.ConnectionError("the node became a read-only replica"))
                if message.startswith("MOVED"):
                    self.slots[slot] = _address(message)
                    asyncio.ensure_future(self.refresh())  # the rest of the map has likely moved too
                else:
                    await self.refresh()
        raise AssertionError("unreachable")


def _address(redirection: str) -> tuple[str, int]:
    """The node a MOVED / ASK reply names ("MOVED 3999 127.0.0.1:6381")."""
    host, _, port = redirection.split()[2].rpartition(":")
    return host, int(port)


class ClusterScript(Script):
    """A Script routed by its first key's slot on a ClusterScriptClient."""

    async def __call__(self, keys=(), args=()):
        slot = key_slot(keys[0].encode() if isinstance(keys[0], str) else keys[0]) if keys else 0
        try:
            return await self.client.call(slot, pack("EVALSHA", self.sha, len(keys), *keys, *args))
        except redis.exceptions.NoScriptError:
            return await self.client.call(slot, pack("EVAL", self.script, len(keys), *keys, *args))
