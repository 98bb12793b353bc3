"""The "API Keys" database in Notion: one row per API key, matched by Key ID (the public id).

A run reads what Notion holds (one paginated query), then creates the missing rows, updates
only the rows whose Tier, Calls Used, User ID or Created At differ, and moves to Notion's trash the
rows of keys that no longer exist (their account was deleted), at most NOTION_SYNC_MAX_REMOVALS
in a run: more than that looks like the app reading the wrong database (an empty one would
remove every row), so none is removed and the run says so. Re-running after a failure
therefore picks up where the last run stopped and never duplicates a row. Raw keys and their
hashes never leave the app: only the public key id is sent.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
import sqlalchemy as sa

from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily
from levqor_core.ops import notion as notion_api

log = logging.getLogger(__name__)

DATABASE_TITLE = "API Keys"
TITLE_PROPERTY = "Key ID"
LOCK_NAME = "lvq:lock:notion-sync"
# The public key ids the app issues: only rows titled like one are the sync's to remove, so rows
# someone added by hand (notes, a header) stay.
OUR_KEY_ID = re.compile(r"^key_[0-9a-f]{16}$")
SCHEMA = {
    "Key ID": {"title": {}},
    **notion_api.ACCOUNT_PROPERTIES,
    "Calls Used": {"number": {"format": "number"}},
    "Created At": {"date": {}},
}

Progress = Callable[[int, int, dict], None]


class SyncAlreadyRunning(Exception):
    pass


@dataclass
class SyncResult:
    total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    removals_held: int = 0  # rows of missing keys left in place: more than the run may remove
    duplicates: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "removals_held": self.removals_held,
        }


def calls_per_key(r: redis.Redis, now: datetime) -> dict[str, int]:
    """Calls of each key in its account's current period: live counters are persisted first."""
    metering.flush_usage(r)
    accounts = {a.id: a for a in db.session.scalars(sa.select(Account))}
    periods = {aid: metering.current_period(a, now) for aid, a in accounts.items()}
    if not periods:
        return {}
    earliest = min(p.start for p in periods.values()).date()
    totals: dict[str, int] = {}
    for key_id, account_id, day, calls in db.session.execute(
        sa.select(UsageDaily.key_id, UsageDaily.account_id, UsageDaily.day, UsageDaily.calls).where(
            UsageDaily.day >= earliest
        )
    ):
        period = periods.get(account_id)
        if period and _in_period(day, period):
            totals[key_id] = totals.get(key_id, 0) + calls
    return totals


def _in_period(day, period: metering.Period) -> bool:
    # The gate's own day boundaries, so Notion shows what the gate counts.
    first, last = metering.period_days(period)
    return first <= day <= last


def desired_rows(r: redis.Redis, now: datetime) -> dict[str, dict]:
    """Key ID -> the properties its Notion row should have."""
    calls = calls_per_key(r, now)
    rows = {}
    for key, account in db.session.execute(sa.select(ApiKey, Account).join(Account).order_by(ApiKey.created_at)):
        rows[key.id] = {
            "Key ID": notion_api.title(key.id),
            "User ID": notion_api.rich_text(str(account.id)),
            "Tier": notion_api.select(account.tier),
            "Calls Used": notion_api.number(calls.get(key.id, 0)),
            "Created At": notion_api.date_value(key.created_at.astimezone(UTC).replace(microsecond=0)),
        }
    return rows


def _same(wanted: dict, current: dict | None) -> bool:
    if current is None:
        return False
    kind = next(iter(wanted))
    have = notion_api.plain(current)
    want = notion_api.plain({"type": kind, **wanted})
    if kind == "date" and have and want:
        return datetime.fromisoformat(have.replace("Z", "+00:00")) == datetime.fromisoformat(want)
    return have == want


def changed_properties(wanted: dict, page: dict) -> dict:
    return {name: value for name, value in wanted.items() if not _same(value, page["properties"].get(name))}


def sync(
    notion: notion_api.Notion, r: redis.Redis, progress: Progress | None = None, max_removals: int = 25
) -> SyncResult:
    """Bring the "API Keys" database in line with the keys; only changed rows are written."""
    lock = r.lock(LOCK_NAME, timeout=3600, blocking=False)
    if not lock.acquire():
        raise SyncAlreadyRunning("Another Notion sync is running; try again when it has finished.")
    try:
        return _sync(notion, r, progress or (lambda done, total, counts: None), max_removals)
    finally:
        try:
            lock.release()
        except redis.exceptions.LockError:
            log.warning("the Notion sync lock expired before the run ended")


def _sync(notion: notion_api.Notion, r: redis.Redis, progress: Progress, max_removals: int) -> SyncResult:
    wanted = desired_rows(r, datetime.now(UTC))
    result = SyncResult(total=len(wanted))
    progress(0, result.total, result.as_dict() | {"phase": "reading Notion"})
    ds_id = notion.ensure_database(DATABASE_TITLE, SCHEMA)
    existing: dict[str, dict] = {}
    gone: list[dict] = []  # rows of keys deleted with their account, duplicates included
    for page in notion.rows(ds_id):
        key_id = notion_api.row_title(page, TITLE_PROPERTY)
        if key_id not in wanted and OUR_KEY_ID.match(key_id):
            gone.append(page)
            continue
        if key_id in existing:
            result.duplicates.append(key_id)  # made by hand in Notion; we keep updating the first
            continue
        existing[key_id] = page
    if result.duplicates:
        log.warning("the Notion API Keys database has duplicate rows for %s", sorted(set(result.duplicates)))
    for done, (key_id, properties) in enumerate(wanted.items(), start=1):
        page = existing.get(key_id)
        if page is None:
            notion.create_row(ds_id, properties, TITLE_PROPERTY)
            result.created += 1
        else:
            changes = changed_properties(properties, page)
            if changes:
                notion.update_row(page["id"], changes)
                result.updated += 1
            else:
                result.unchanged += 1
        if done % 10 == 0 or done == result.total:
            progress(done, result.total, result.as_dict() | {"phase": "writing rows"})
    if len(gone) > max_removals:
        log.error(
            "Notion sync: %d rows are of keys this database does not have, more than the %d a run may "
            "remove; none removed. Check DATABASE_URL; if the keys really are gone, run `flask jobs run "
            "notion-sync` with NOTION_SYNC_MAX_REMOVALS raised",
            len(gone),
            max_removals,
        )
        result.removals_held, gone = len(gone), []
    for page in gone:
        notion.trash_row(page["id"])
        result.removed += 1
    if gone:
        progress(result.total, result.total, result.as_dict() | {"phase": "removing rows of deleted keys"})
    log.info("Notion sync: %s", result.as_dict())
    return result
