"""The request log's writer: the ASGI middleware hands it one tuple per account call, a thread
writes them to `request_log` in batches.

Per request the hot path only appends a tuple to an in-process deque (no Redis, no SQL, no
decoding); everything else (decoding, truncating, redacting, reading the problem's type) happens
in the flush thread, every REQUEST_LOG_FLUSH_SECONDS. The buffer is bounded in calls and in bytes:
while the database is away it keeps the newest calls within MAX_BUFFERED and MAX_BUFFERED_BYTES and
counts the ones it had to drop. Every
flush also names the accounts it wrote for in Redis (WRITTEN_ACCOUNTS): the one periodic
`trim-request-log` job cuts those back to their cap each minute, so the cost of keeping accounts
within their cap does not grow with the number of processes (`queries.trim_written`), and puts the
written calls on their accounts' log streams (levqor_core.streams.feed) for `levqor logs tail`.
"""

import json
import logging
import re
import threading
from collections import deque
from datetime import UTC, datetime

import psycopg
import redis
import sqlalchemy as sa
from prometheus_client import Counter as PromCounter

from levqor_core.periodic_thread import PeriodicThread
from levqor_core.requestlog import queries
from levqor_core.requestlog.models import RequestLogEntry
from levqor_core.streams import feed

log = logging.getLogger(__name__)

MAX_BUFFERED = 50_000
# A call holds up to ~16 KiB (its logged body and problem): by count alone 50,000 of them were
# ~0.8 GB per process while PostgreSQL was away. What a call weighs is `weight()`.
MAX_BUFFERED_BYTES = 32 * 1024 * 1024
# A tuple of 11 and its small values (the ints, floats and short strings around the bodies).
CALL_OVERHEAD_BYTES = 400
BATCH_ROWS = 1_000
# Enough to see what was sent; a body can be 64 KiB and the log keeps 10,000 calls per account.
MAX_BODY_CHARS = 4096
MAX_QUERY_CHARS = 2048
MAX_PATH_CHARS = 512
# A key pasted into a body or a query by mistake is not kept: the log shows who called, never how.
_KEY = re.compile(r"lvq_[0-9a-f]{32}_[0-9A-Za-z]{6}")

DROPPED = PromCounter(
    "levqor_request_log_dropped", "Request-log entries dropped because the buffer was full (database away)."
)


def entry(
    at: float,
    account_id: int,
    key_id: str | None,
    request_id: str,
    method: str,
    path: str,
    query: bytes,
    status: int,
    seconds: float,
    request_body: bytes | None,
    response_body: bytes | None,
) -> tuple:
    """One call as the hot path hands it over (a plain tuple: cheap to build and to queue). The
    bodies are the first bytes of each, as the request guard kept them (none of a response that
    carried a secret)."""
    return (at, account_id, key_id, request_id, method, path, query, status, seconds, request_body, response_body)


def weight(call: tuple) -> int:
    """About the bytes one buffered call holds: its variable parts and a fixed overhead (Recorder.add
    computes the same inline)."""
    return CALL_OVERHEAD_BYTES + len(call[5]) + len(call[6]) + len(call[9] or b"") + len(call[10] or b"")


class Recorder:
    """The process's buffer of calls to log and the thread that writes them."""

    def __init__(
        self,
        database_url: str,
        flush_seconds: float,
        max_buffered: int = MAX_BUFFERED,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        connect_args: dict | None = None,
        redis_client=None,
        feed_redis=None,
    ):
        self.database_url = database_url
        self.connect_args = connect_args or {}
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.max_buffered_bytes = max_buffered_bytes
        self.buffer: deque = deque()
        self.buffered_bytes = 0  # the weight() of what is in the buffer
        self.dropped = 0
        # Held only to change the buffer and its byte count together (request threads and the
        # flush thread both do): a few hundred nanoseconds on the hot path.
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._engine: sa.Engine | None = None
        self.redis = redis_client  # where the accounts written for are named (None: not named)
        # Where the log streams are (the limits Redis, beside the streams' other keys); REDIS_URL's
        # client when not given.
        self.feed_redis = feed_redis if feed_redis is not None else redis_client
        self._reported_drops = 0
        # A worker stopped by its server (a deploy, max-requests) writes its last interval's calls
        # instead of losing them with the daemon thread.
        self.thread = PeriodicThread("request-log-flush", flush_seconds, self._tick, last_tick=self._last_flush)

    def add(self, call: tuple) -> None:
        """Queue one call (the hot path: its weight, an append and two bound checks under a lock)."""
        size = CALL_OVERHEAD_BYTES + len(call[5]) + len(call[6]) + len(call[9] or b"") + len(call[10] or b"")
        with self._buffer_lock:
            self.buffer.append(call)
            self.buffered_bytes += size
            if len(self.buffer) > self.max_buffered or self.buffered_bytes > self.max_buffered_bytes:
                self._within_bounds()

    def start(self) -> None:
        """Start the flush thread (once per process; later calls return at once)."""
        self.thread.start()

    def flush(self) -> int:
        """Write every buffered call now; returns how many. On a database error the calls go
        back to the front of the buffer (within its bound) and the error is raised."""
        written = 0
        with self._flush_lock:
            while self.buffer:
                batch = self._take(BATCH_ROWS)
                rows = [row(call) for call in batch]
                try:
                    with self.engine().begin() as conn:
                        _insert(conn, rows)
                except _REFUSED:
                    # A value the database refuses would otherwise come back first at every flush,
                    # and nobody's calls would be written again: the others go in one by one.
                    batch = self._insert_each(batch)
                    rows = [row(call) for call in batch]
                except Exception:
                    self._put_back(batch)
                    raise
                written += len(batch)
                self._name_accounts(batch)
                self._stream(rows)
        return written

    def _name_accounts(self, calls: list[tuple]) -> None:
        """Tell the periodic trim which accounts grew (a Redis hiccup only delays their trim to their
        next written call)."""
        if self.redis is None or not calls:
            return
        try:
            self.redis.sadd(queries.WRITTEN_ACCOUNTS, *{call[1] for call in calls})
        except redis.RedisError as err:
            log.warning("request log: accounts written for not named for the trim: %s", err)

    def _stream(self, rows: list[dict]) -> None:
        """The written calls on their accounts' log streams (`levqor logs tail`), one round trip per
        batch, here rather than on the request's path."""
        if self.feed_redis is None:
            return
        try:
            feed.publish_calls(self.feed_redis, rows)
        except (redis.RedisError, redis.exceptions.RedisClusterException) as err:  # a cluster's own too
            log.warning("request log: calls not streamed: %s", err)

    def _insert_each(self, batch: list[tuple]) -> list[tuple]:
        """Insert the calls one at a time; returns those written. A refused one is dropped and
        counted; any other error (the connection lost) puts back the ones not tried yet and raises."""
        written = []
        for n, call in enumerate(batch):
            try:
                with self.engine().begin() as conn:
                    _insert(conn, [row(call)])
            except _REFUSED as err:
                log.error("request log: call %s refused by the database, dropped: %s", call[3], type(err).__name__)
                self.dropped += 1
                DROPPED.inc()
                continue
            except Exception:
                self._name_accounts(written)
                self._put_back(batch[n:])
                raise
            written.append(call)
        return written

    def _take(self, most: int) -> list[tuple]:
        """The oldest calls, up to `most`, out of the buffer."""
        with self._buffer_lock:
            batch = [self.buffer.popleft() for _ in range(min(most, len(self.buffer)))]
            self.buffered_bytes -= sum(weight(call) for call in batch)
        return batch

    def _put_back(self, calls: list[tuple]) -> None:
        """Back to the front of the buffer, for the next flush (within its bounds)."""
        with self._buffer_lock:
            self.buffer.extendleft(reversed(calls))
            self.buffered_bytes += sum(weight(call) for call in calls)
            self._within_bounds()

    def clear(self) -> None:
        """Forget what is buffered (tests: a new test's accounts may reuse an old one's ids)."""
        with self._flush_lock, self._buffer_lock:
            self.buffer.clear()
            self.buffered_bytes = 0

    def engine(self) -> sa.Engine:
        # Its own single connection: the writer never takes one of the request threads' pool.
        if self._engine is None:
            pool = {} if self.database_url.startswith("sqlite") else {"pool_size": 1, "max_overflow": 0}
            self._engine = sa.create_engine(
                self.database_url, pool_pre_ping=True, connect_args=self.connect_args, **pool
            )
        return self._engine

    def _within_bounds(self) -> None:
        """Drop the oldest calls (counted) until the buffer is within both bounds; under _buffer_lock."""
        while self.buffer and (len(self.buffer) > self.max_buffered or self.buffered_bytes > self.max_buffered_bytes):
            self.buffered_bytes -= weight(self.buffer.popleft())
            self.dropped += 1
            DROPPED.inc()

    def _last_flush(self) -> None:
        try:
            self.flush()
        except Exception:
            log.warning("request log: %d call(s) not written at exit", len(self.buffer))

    def _tick(self) -> None:
        try:
            self.flush()
        finally:
            if self.dropped != self._reported_drops:
                log.warning(
                    "request log: %d call(s) dropped while the database was away", self.dropped - self._reported_drops
                )
                self._reported_drops = self.dropped


# What the database (or the driver, encoding the row) refuses in one call's values: such a call can
# never be written, so it is dropped rather than retried.
_REFUSED = (psycopg.DataError, psycopg.IntegrityError, sa.exc.DataError, sa.exc.IntegrityError, UnicodeError)

_COLUMNS = (
    "account_id",
    "at",
    "request_id",
    "key_id",
    "method",
    "path",
    "query",
    "status",
    "latency_ms",
    "problem_type",
    "sandbox",
    "request_body",
    "response_body",
)
_COPY = f"COPY request_log ({', '.join(_COLUMNS)}) FROM STDIN"


def _insert(conn: sa.Connection, rows: list[dict]) -> None:
    """On PostgreSQL by COPY: SQLAlchemy's multi-row INSERT bound each of the 13 values of each
    row through its types, which made the writer thread ~10% of a web process's CPU under load
    (README "Speed"); elsewhere (SQLite) an INSERT."""
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(RequestLogEntry), rows)
        return
    with conn.connection.driver_connection.cursor() as cursor, cursor.copy(_COPY) as copy:
        for values in rows:
            copy.write_row([values[column] for column in _COLUMNS])


def row(call: tuple) -> dict:
    """The table row for one buffered call: decoded, truncated, keys redacted."""
    at, account_id, key_id, request_id, method, path, query, status, seconds, body, response = call
    error = status >= 400
    return {
        "account_id": account_id,
        "at": datetime.fromtimestamp(at, UTC),
        "request_id": request_id,
        "key_id": key_id,
        "method": method[:16],
        "path": _printable(path[:MAX_PATH_CHARS]),
        "query": _text(query, MAX_QUERY_CHARS) or None,
        "status": status,
        "latency_ms": round(seconds * 1000, 3),
        "problem_type": _problem_type(response) if error and response else None,
        "sandbox": path.startswith("/api/sandbox/"),
        "request_body": _text(body, MAX_BODY_CHARS) or None,
        "response_body": _text(response, MAX_BODY_CHARS * 2) or None,
    }


def _text(raw: bytes | None, limit: int) -> str:
    if not raw:
        return ""
    # utf-8 is at most 4 bytes a character; redacted before the cut, so no key is half kept.
    text = _KEY.sub("lvq_…(redacted)", _printable(raw[: limit * 4].decode("utf-8", "replace")))
    return text[:limit] + "…" if len(text) > limit else text


def _printable(text: str) -> str:
    """NUL, which PostgreSQL's text refuses, shown like any undecodable byte (a path or a JSON
    string can carry one: %00, \\u0000)."""
    return text.replace("\x00", "\ufffd")


def _problem_type(body: bytes) -> str | None:
    try:
        found = json.loads(body).get("type")
    except (ValueError, AttributeError):
        return None
    return _printable(str(found)[:200]) if found else None
