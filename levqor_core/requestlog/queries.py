"""Reading the request log, always for one account, and keeping it bounded (purge)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.requestlog.models import RequestLogEntry

RETENTION = timedelta(days=7)
CAP_PER_ACCOUNT = 10_000
PAGE_SIZE = 50
STATUS_CLASSES = ("2xx", "4xx", "5xx")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


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


def purge(now: datetime | None = None, keep: timedelta = RETENTION, cap: int = CAP_PER_ACCOUNT) -> int:
    """Delete calls older than `keep`, beyond the newest `cap` of each account, and of accounts
    that no longer exist; returns how many rows went. For the periodic jobs."""
    now = now or datetime.now(UTC)
    e = RequestLogEntry
    gone = db.session.execute(sa.delete(e).where(e.at < now - keep)).rowcount
    gone += db.session.execute(sa.delete(e).where(~sa.exists().where(Account.id == e.account_id))).rowcount
    over = db.session.scalars(sa.select(e.account_id).group_by(e.account_id).having(sa.func.count() > cap)).all()
    gone += trim(db.session.connection(), over, cap)
    db.session.commit()
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
