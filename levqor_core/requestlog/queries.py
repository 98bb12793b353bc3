"""Reading the request log, always for one account, and keeping it bounded.

Two periodic jobs keep it so, each at a cost that grows with the work, not with the table, the
accounts or the web processes: `trim-request-log` (every minute) cuts the accounts the web
processes wrote for since its last run (named in Redis, WRITTEN_ACCOUNTS) back to their newest
CAP_PER_ACCOUNT calls, and sweeps calls of accounts deleted in the last few minutes that a process
still had buffered; `purge-request-log` (hourly) deletes calls older than RETENTION through the
index on `at`."""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
import sqlalchemy as sa
from flask import current_app

from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.requestlog.models import RequestLogEntry

RETENTION = timedelta(days=7)
# Account ids the web processes wrote calls for since the last trim (a Redis set); the trim takes it
# over under TRIMMING, so a failed trim is taken up again by the next one.
WRITTEN_ACCOUNTS = "lvq:requestlog:written"
TRIMMING = "lvq:requestlog:trimming"
# Accounts deleted lately, by time of deletion (a sorted set): a web process may still write a call
# it buffered just before, so their rows are swept again for DELETED_SWEEP_SECONDS.
DELETED_ACCOUNTS = "lvq:requestlog:deleted"
DELETED_SWEEP_SECONDS = 600
CAP_PER_ACCOUNT = 10_000
PAGE_SIZE = 50
STATUS_CLASSES = ("2xx", "4xx", "5xx")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filters:
    status_class: str = ""  # "", or one of STATUS_CLASSES
    path: str = ""  # a path prefix
    request_id: str = ""

    @classmethod
    def parse(cls, args) -> "Filters":
        """From query parameters; anything unknown or oversized is ignored, not an error."""
        status_class = args.get("status", "")
        return cls(
            status_class=status_class if status_class in STATUS_CLASSES else "",
            path=args.get("path", "").strip()[:200],
            request_id=args.get("request_id", "").strip()[:32],
        )

    def as_args(self) -> dict:
        pairs = (("status", self.status_class), ("path", self.path), ("request_id", self.request_id))
        return {name: value for name, value in pairs if value}


@dataclass(frozen=True)
class Page:
    entries: list[RequestLogEntry]
    next_cursor: str | None


def page(account_id: int, now: datetime, filters: Filters, cursor: str | None = None, size: int | None = None) -> Page:
    """The account's calls of the retention window, newest first, after `cursor` (keyset)."""
    size = size or PAGE_SIZE
    e = RequestLogEntry
    query = sa.select(e).where(e.account_id == account_id, e.at >= now - RETENTION)
    if filters.status_class:
        low = int(filters.status_class[0]) * 100
        query = query.where(e.status >= low, e.status < low + 100)
    if filters.path:
        query = query.where(e.path.startswith(filters.path, autoescape=True))
    if filters.request_id:
        query = query.where(e.request_id == filters.request_id)
    after = _parse_cursor(cursor)
    if after is not None:
        query = query.where(sa.tuple_(e.at, e.id) < after)
    rows = db.session.scalars(query.order_by(e.at.desc(), e.id.desc()).limit(size + 1)).all()
    more = len(rows) > size
    rows = rows[:size]
    return Page(rows, _cursor(rows[-1]) if more else None)


def find(account_id: int, request_id: str, now: datetime) -> RequestLogEntry | None:
    """One call of this account by its Request-Id (None for anyone else's)."""
    e = RequestLogEntry
    query = sa.select(e).where(e.account_id == account_id, e.request_id == request_id, e.at >= now - RETENTION)
    return db.session.scalars(query.order_by(e.at.desc()).limit(1)).first()


def purge(now: datetime | None = None, keep: timedelta = RETENTION) -> int:
    """Delete calls older than `keep`; returns how many rows went. For the periodic job: a range of
    the index on `at`, so its cost grows with the rows that expire."""
    now = now or datetime.now(UTC)
    gone = db.session.execute(sa.delete(RequestLogEntry).where(RequestLogEntry.at < now - keep)).rowcount
    db.session.commit()
    return gone


def trim_written(r, now: datetime | None = None, cap: int = CAP_PER_ACCOUNT) -> int:
    """Cut the accounts written for since the last run back to their newest `cap` calls, and sweep
    lately deleted accounts' calls; returns how many rows went. For the periodic job."""
    now = now or datetime.now(UTC)
    if r.exists(WRITTEN_ACCOUNTS):
        # Keep what a failed run left behind, then take the current set over atomically.
        r.sunionstore(WRITTEN_ACCOUNTS, [WRITTEN_ACCOUNTS, TRIMMING])
        r.rename(WRITTEN_ACCOUNTS, TRIMMING)
    accounts = sorted(int(a) for a in r.smembers(TRIMMING))
    r.zremrangebyscore(DELETED_ACCOUNTS, "-inf", now.timestamp() - DELETED_SWEEP_SECONDS)
    deleted = [int(a) for a in r.zrange(DELETED_ACCOUNTS, 0, -1)]
    conn = db.session.connection()
    gone = trim(conn, accounts, cap)
    if deleted:
        gone += conn.execute(sa.delete(RequestLogEntry).where(RequestLogEntry.account_id.in_(deleted))).rowcount
    db.session.commit()
    r.delete(TRIMMING)
    return gone


def trim(conn: sa.Connection, account_ids, cap: int = CAP_PER_ACCOUNT) -> int:
    """Delete each of these accounts' rows beyond its newest `cap`; returns how many went."""
    e = RequestLogEntry
    gone = 0
    for account_id in account_ids:
        # The oldest row still kept (none: the account is within its cap); everything older goes.
        last_kept = conn.execute(
            sa.select(e.at, e.id)
            .where(e.account_id == account_id)
            .order_by(e.at.desc(), e.id.desc())
            .offset(cap - 1)
            .limit(1)
        ).first()
        if last_kept is not None:
            gone += conn.execute(
                sa.delete(e).where(e.account_id == account_id, sa.tuple_(e.at, e.id) < tuple(last_kept))
            ).rowcount
    return gone


def _cursor(entry: RequestLogEntry) -> str:
    return f"{(entry.at - _EPOCH) // _MICRO}.{entry.id}"  # exact: no float on the way


def _parse_cursor(cursor: str | None) -> tuple[datetime, int] | None:
    try:
        micros, id_ = (int(part) for part in (cursor or "").split(".", 1))
        return _EPOCH + micros * _MICRO, id_
    except (ValueError, OverflowError, OSError):
        return None


@deletion.step("request-log-rows", deletion.ROWS, tables=("request_log",))
def _delete_request_log_rows(account: Account, _actor) -> None:
    db.session.execute(sa.delete(RequestLogEntry).where(RequestLogEntry.account_id == account.id))
    try:  # calls a web process still had buffered are swept by the trim for a few minutes
        current_app.extensions["levqor.redis"].zadd(DELETED_ACCOUNTS, {str(account.id): time.time()})
    except redis.RedisError as err:
        log.warning("request log: account %s's buffered calls will expire instead: %s", account.id, err)


@dataclass(frozen=True)
class Summary:
    """An account's calls of the retention window at a glance (the portal's Overview)."""

    calls: int
    errors: int  # status >= 400
    recent: list[RequestLogEntry]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None


def summary(account_id: int, now: datetime, recent: int = 5) -> Summary:
    """How many calls and errors the account made in the window, and its newest `recent` calls."""
    e = RequestLogEntry
    window = (e.account_id == account_id, e.at >= now - RETENTION)
    calls, errors = db.session.execute(
        sa.select(sa.func.count(), sa.func.count().filter(e.status >= 400)).where(*window)
    ).one()
    newest = db.session.scalars(sa.select(e).where(*window).order_by(e.at.desc(), e.id.desc()).limit(recent)).all()
    return Summary(int(calls), int(errors or 0), list(newest))


def has_call(account_id: int, *, sandbox: bool, job_created: bool = False) -> bool:
    """Whether the log holds a successful call of the account, in the sandbox or live (made with a
    key, or from the portal for the sandbox), optionally one that created a job."""
    e = RequestLogEntry
    query = sa.select(e.id).where(e.account_id == account_id, e.sandbox == sandbox, e.status < 400)
    if not sandbox:
        query = query.where(e.key_id.is_not(None))
    if job_created:
        query = query.where(e.method == "POST", e.path.endswith("/jobs"))
    return db.session.scalar(query.limit(1)) is not None
