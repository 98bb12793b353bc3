"""What the gate knows about a key (its record), where it keeps it, and how a change reaches it.

A record is read from the database on a cache miss and kept in Redis for gate.lua (RECORD_TTL),
or, while Redis is unreachable, in this process (DEGRADED_CACHE_SECONDS). Revoking or rotating
a key, or changing its account's tier or period, forgets the record in both places, so every
process sees the change on its next call. A generation counter fences the Redis copy: a record
read before a forget() is never written after it.

A record lives under its account's hash tag (with the counters gate.lua updates in the same
call); which account a key belongs to never changes, so each process remembers it (`owners`),
and Redis does too (`locator_key`) for the first call a process sees of a key.
"""

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import redis
import sqlalchemy as sa
from blinker import ANY
from flask import Flask, current_app

from levqor_core import redis_conn, signals, tiers
from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering import counters as metering

log = logging.getLogger(__name__)

RECORD_TTL = 600  # also bounds how long a revocation missed during an outage can linger
NEGATIVE_TTL = 60
LOCATOR_TTL = 86400  # a key's account never changes: kept long, read once per process
OWNERS_SIZE = 100_000  # key owners remembered per process (cleared whole when full)
DEGRADED_CACHE_SECONDS = 5
DEGRADED_CACHE_SIZE = 10_000
FILL_ATTEMPTS = 3
UNREAD = object()  # KeyCache.outage_copy: no recent read (None means a read found no usable key)

# Writes a key record only if no forget() happened since the database read (KEYS[2] unchanged).
# KEYS[1] record, KEYS[2] generation; ARGV[1] generation seen before the read ('*': write anyway),
# ARGV[2] TTL, ARGV[3..] the record's fields and values.
_FILL_SCRIPT = """
if ARGV[1] ~= '*' and (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


def record_key(account_id: int, key_hash: str) -> str:
    """The Redis hash gate.lua reads the key's record from."""
    return f"lvq:{metering.tag(account_id)}:k:{key_hash}"


def generation_key(account_id: int, key_hash: str) -> str:
    """Bumped by every forget(): a record read from the database before a bump is stale."""
    return f"lvq:{metering.tag(account_id)}:kg:{key_hash}"


def locator_key(key_hash: str) -> str:
    """Which account and key id a key hash belongs to ("<account>|<key id>"; "" for no usable key,
    for NEGATIVE_TTL): where its record lives, for a process that has not seen the key yet."""
    return f"lvq:ka:{key_hash}"


class Owner(NamedTuple):
    """Whose a key is: fixed for the key's life."""

    account_id: int
    key_id: str


def parse_locator(value: bytes | None) -> "Owner | None | bool":
    """A locator's value: the Owner, False for "no usable key", None when Redis has none."""
    if value is None:
        return None
    if not value:
        return False
    account_id, key_id = value.decode().split("|", 1)
    return Owner(int(account_id), key_id)


@dataclass
class KeyRecord:
    account_id: int
    key_id: str
    quota: int  # -1 = unlimited
    burst: int
    period: metering.Period | None  # paid subscription period, else None (calendar month)
    expires_at: float | None


def load_record(key_hash: str, now: float) -> tuple[KeyRecord | None, Account | None]:
    """The key's record from the database (call inside an app context); (None, None) when the key
    is unknown, revoked or expired."""
    row = db.session.execute(sa.select(ApiKey, Account).join(Account).where(ApiKey.key_hash == key_hash)).first()
    if row is None:
        return None, None
    key, account = row
    nowdt = datetime.fromtimestamp(now, UTC)
    if not key.is_usable(nowdt):
        return None, None
    tier = tiers.get(account.tier)
    period = metering.current_period(account, nowdt)
    record = KeyRecord(
        account_id=account.id,
        key_id=key.id,
        quota=-1 if tier.monthly_quota is None else tier.monthly_quota,
        burst=tier.burst_per_second,
        period=period if period.id.startswith("p") else None,
        expires_at=key.expires_at.timestamp() if key.status == "expiring" else None,
    )
    return record, account


def _record_fields(record: KeyRecord | None) -> tuple[dict, int]:
    """The Redis hash gate.lua reads (field names as in its HMGET) and how long to keep it."""
    if record is None:
        return {"acct": ""}, NEGATIVE_TTL  # remembered as unknown for a minute
    fields = {
        "acct": record.account_id,
        "kid": record.key_id,
        "quota": record.quota,
        "burst": record.burst,
        "pid": record.period.id if record.period else "",
        "pend": int(record.period.end.timestamp()) if record.period else "",
        "exp": repr(record.expires_at) if record.expires_at else "",
    }
    return fields, RECORD_TTL


class KeyCache:
    """This app's key records in Redis and, during an outage, in this process."""

    def __init__(self, app: Flask, r: redis.Redis):
        self.app = app
        self.redis = r
        self._fill = r.register_script(_FILL_SCRIPT)
        self._outage_copies: dict[str, tuple[float, KeyRecord | None]] = {}
        # Forgets that could not reach Redis: sent again by send_unsent_forgets().
        self.unsent_forgets: set[tuple[int, str]] = set()
        # Key hash → Owner, for the keys this process has seen (a key's owner never changes).
        self.owners: dict[str, Owner] = {}
        self._unsent_lock = threading.Lock()

    def remember(self, key_hash: str, owner: Owner) -> None:
        if len(self.owners) >= OWNERS_SIZE:
            self.owners.clear()  # a flood of keys must not grow it without bound
        self.owners[key_hash] = owner

    def fill(self, key_hash: str, now: float, owner: Owner | None = None) -> Owner | None:
        """Cache the key's record (or that it is unknown) and seed its counters; returns its owner
        (None: no usable key). A revocation or tier change that lands between the database read
        and the write would otherwise leave the old record cached for RECORD_TTL; the generation
        check turns that into another read."""
        for attempt in range(1, FILL_ATTEMPTS + 1):
            # The last attempt writes what it read whatever happens meanwhile: its read is at most
            # a moment old, and leaving the key uncached would answer this call "unknown key".
            # Before the first read names the owner, no forget can be known: "" (none yet) is
            # checked by the write instead, and a mismatch is one more attempt.
            if attempt == FILL_ATTEMPTS:
                generation = b"*"
            else:
                generation = self.redis.get(generation_key(owner.account_id, key_hash)) or b"" if owner else b""
            with self.app.app_context():
                record, account = load_record(key_hash, now)
                if record is not None:
                    metering.seed_counters(self.redis, account, record.key_id, datetime.fromtimestamp(now, UTC))
            if record is None and owner is None:
                self.redis.set(locator_key(key_hash), "", ex=NEGATIVE_TTL)
                return None
            if record is not None:
                if owner is None:
                    self.redis.set(locator_key(key_hash), f"{record.account_id}|{record.key_id}", ex=LOCATOR_TTL)
                owner = Owner(record.account_id, record.key_id)
            fields, ttl = _record_fields(record)
            pairs = [x for field, value in fields.items() for x in (field, value)]
            keys = [record_key(owner.account_id, key_hash), generation_key(owner.account_id, key_hash)]
            if self._fill(keys=keys, args=[generation, ttl, *pairs]):
                return owner if record is not None else None
        return None

    def outage_copy(self, key_hash: str, now: float):
        """The record read during this outage less than DEGRADED_CACHE_SECONDS ago (None: no usable
        key), or UNREAD."""
        cached = self._outage_copies.get(key_hash)
        return cached[1] if cached and cached[0] > now else UNREAD

    def read_for_outage(self, key_hash: str, now: float) -> KeyRecord | None:
        """The record from the database (inside an app context), kept DEGRADED_CACHE_SECONDS."""
        if len(self._outage_copies) >= DEGRADED_CACHE_SIZE:
            self._outage_copies.clear()  # a flood of made-up keys must not grow it without bound
        record = load_record(key_hash, now)[0]
        self._outage_copies[key_hash] = (now + DEGRADED_CACHE_SECONDS, record)
        return record

    def forget(self, keys: list[tuple[int, str]]) -> None:
        """Drop the records of these (account id, key hash) here and in Redis; raises RedisError
        (and sends them again once Redis answers) when it cannot reach Redis."""
        for _, h in keys:
            self._outage_copies.pop(h, None)
        if keys:
            self._drop_in_redis(keys)

    def send_unsent_forgets(self) -> None:
        """Drop in Redis the records forgotten while it was unreachable (kept for later if it still is)."""
        with self._unsent_lock:
            unsent, self.unsent_forgets = self.unsent_forgets, set()
        if unsent:
            with contextlib.suppress(redis.RedisError):
                self._drop_in_redis(unsent)

    def _drop_in_redis(self, keys) -> None:
        """Bump the keys' generations and delete their records; kept to send again on RedisError."""
        pipe = self.redis.pipeline(transaction=False)  # per key, each in its account's slot
        for account_id, h in keys:
            pipe.incr(generation_key(account_id, h))
            pipe.expire(generation_key(account_id, h), RECORD_TTL)
            pipe.delete(record_key(account_id, h))
        try:
            pipe.execute()
        except redis_conn.UNAVAILABLE:
            with self._unsent_lock:
                self.unsent_forgets.update(keys)
            raise


def forget_keys(key_hashes: list[str]) -> None:
    """Drop cached key records (after a rotation or revocation)."""
    if not key_hashes:
        return
    owned = db.session.execute(
        sa.select(ApiKey.account_id, ApiKey.key_hash).where(ApiKey.key_hash.in_(key_hashes))
    ).all()
    _forget([(account_id, h) for account_id, h in owned])


def _forget(keys: list[tuple[int, str]]) -> None:
    try:
        current_app.extensions["levqor.gate"].records.forget(keys)
    except redis_conn.UNAVAILABLE:
        log.warning("could not drop cached key records; they expire within %ss", RECORD_TTL)


def forget_account(account_id: int) -> None:
    """Drop the cached records of an account's keys (after a tier or period change)."""
    hashes = db.session.scalars(
        sa.select(ApiKey.key_hash).where(ApiKey.account_id == account_id, ApiKey.status.in_(("active", "expiring")))
    ).all()
    _forget([(account_id, h) for h in hashes])


@signals.keys_retired.connect_via(ANY, weak=False)
def _on_keys_retired(_sender, key_hashes: list[str], **_) -> None:
    forget_keys(key_hashes)


@signals.account_limits_changed.connect_via(ANY, weak=False)
def _on_account_limits_changed(account_id: int, **_) -> None:
    forget_account(account_id)


@deletion.step("forget-cached-keys", deletion.CACHES)
def _forget_deleted_account(account: Account, _actor) -> None:
    forget_account(account.id)
