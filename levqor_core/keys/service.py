"""API keys: the create / rotate / revoke lifecycle and the audit trail (the key format is `format.py`)."""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from levqor_core import problems, signals
from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys.format import generate, hash_key, hint
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.webhooks import events as webhook_events


class KeyCreationConflict(problems.Conflict):
    slug, title = "key-creation-conflict", "Concurrent key creation"


class ExpiringKeyCannotManage(problems.Problem):
    status, slug, title = 403, "expiring-key-cannot-manage", "An expiring key cannot manage keys"


MAX_GRACE = timedelta(hours=24)


@dataclass
class IssuedKey:
    """A freshly created key. `raw` exists only in this object and the one response."""

    record: ApiKey
    raw: str

    def to_dict(self, tier: str) -> dict:
        """The one answer that holds the raw key."""
        return self.record.to_dict(tier) | {"key": self.raw}


@dataclass
class KeyRing:
    """An account's usable keys: the active one and any old key still in its rotation grace period."""

    active: ApiKey | None
    expiring: list[ApiKey]

    def to_dict(self, tier: str) -> dict | None:
        """The active key with its expiring predecessors (the API's GET /key); None without an active key."""
        if self.active is None:
            return None
        return self.active.to_dict(tier) | {"expiring": [k.to_dict(tier) for k in self.expiring]}


@dataclass
class Actor:
    email: str
    ip: str | None = None
    user_agent: str | None = None


def active_key(account_id: int) -> ApiKey | None:
    return db.session.scalar(sa.select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.status == "active"))


def visible_keys(account_id: int, now: datetime | None = None) -> list[ApiKey]:
    """The active key and any old key still inside its rotation grace period."""
    now = now or utcnow()
    expire_lapsed(account_id, now)
    rows = db.session.scalars(
        sa.select(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.status.in_(("active", "expiring")))
        .order_by(ApiKey.created_at.desc())
    )
    return list(rows)


def key_ring(account_id: int, now: datetime | None = None) -> KeyRing:
    """The account's active key and its keys in a grace period (lapsed ones recorded as expired first)."""
    visible = visible_keys(account_id, now)
    return KeyRing(
        active=next((k for k in visible if k.status == "active"), None),
        expiring=[k for k in visible if k.status == "expiring"],
    )


def expire_lapsed(account_id: int, now: datetime) -> None:
    """Mark grace-period keys whose time is up as expired, with an audit event.

    One UPDATE … RETURNING: of two requests that find the same lapsed key, only the one whose
    update changed the row records the event."""
    lapsed = db.session.execute(
        sa.update(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.status == "expiring", ApiKey.expires_at <= now)
        .values(status="expired")
        .returning(ApiKey.id, ApiKey.expires_at)
    ).all()
    for key_id, expires_at in lapsed:
        # Recorded when next looked at, stamped with when it happened.
        db.session.add(KeyEvent(account_id=account_id, key_id=key_id, event="expired", actor="system", at=expires_at))
    if lapsed:  # a commit would also expire every loaded object, and this runs on each dashboard view
        db.session.commit()


def issue(account: Account, actor: Actor, grace: timedelta = timedelta(0)) -> IssuedKey:
    """Create the account's new active key, retiring the old one at once or after `grace`."""
    if grace < timedelta(0) or grace > MAX_GRACE:
        raise ValueError("grace period must be between 0 and 24 hours")
    return _issue(account, actor, grace, emergency=False)


def replace_at_once(account: Account, actor: Actor) -> IssuedKey:
    """The emergency replacement of a leaked key: every usable key (the active one and any still in
    a rotation grace period) is revoked now, and a new active key issued; every event is marked as
    an emergency. Whether it is allowed (a fresh log-in, once a day) is the caller's door's rule."""
    return _issue(account, actor, timedelta(0), emergency=True)


def _issue(account: Account, actor: Actor, grace: timedelta, emergency: bool) -> IssuedKey:
    now = utcnow()
    # Locks the account row on PostgreSQL so concurrent rotations queue up instead of racing.
    db.session.execute(sa.select(Account.id).where(Account.id == account.id).with_for_update())
    old = active_key(account.id)
    retired: list[str] = []
    if old is not None:
        retired.append(old.key_hash)
        if grace:
            old.status, old.expires_at = "expiring", now + grace
        else:
            old.status, old.revoked_at = "revoked", now
        db.session.flush()
    if emergency:
        # A leak may be of any key that still works: none keeps working, and each says so in the trail.
        cut_off = list(
            db.session.scalars(sa.select(ApiKey).where(ApiKey.account_id == account.id, ApiKey.status == "expiring"))
        )
        for key in cut_off:
            key.status, key.revoked_at = "revoked", now
            retired.append(key.key_hash)
        for key in ([old] if old is not None else []) + cut_off:
            db.session.add(_event(account.id, key.id, "revoked", actor, now, emergency=True))
        db.session.flush()
    raw = generate()
    record = ApiKey(
        id="key_" + secrets.token_hex(8),
        account_id=account.id,
        key_hash=hash_key(raw),
        hint=hint(raw),
        status="active",
        created_at=now,
    )
    db.session.add(record)
    db.session.add(_event(account.id, record.id, "rolled" if old else "created", actor, now, emergency=emergency))
    try:
        db.session.commit()
    except IntegrityError:
        # Another creation won the race (the database allows one active key per account).
        db.session.rollback()
        raise KeyCreationConflict("Another key was created for this account at the same moment.") from None
    # Drop cached records so every process sees the change on its next request.
    signals.keys_retired.send(None, key_hashes=retired)
    signals.account_keys_changed.send(account.id)
    if retired:  # a first key is no roll, and has no event
        # Metadata, never the key; `emergency` tells a leak's replacement (every usable key cut off at
        # once, even one only in its grace period) from a planned roll.
        webhook_events.emit(account.id, "key.rolled", lambda: record.to_dict(account.tier) | {"emergency": emergency})
    return IssuedKey(record=record, raw=raw)


def revoke(account: Account, actor: Actor, calling_key_id: str | None = None) -> ApiKey | None:
    """Revoke the active key (and any key in its grace period); None when there was none.

    `calling_key_id` is the key making the call, if a key makes it: only the active key may. A
    key in its rotation grace period is the one a leak makes you roll; it must not be able to
    revoke its replacement."""
    now = utcnow()
    keys = db.session.scalars(
        sa.select(ApiKey).where(ApiKey.account_id == account.id, ApiKey.status.in_(("active", "expiring")))
    ).all()
    if calling_key_id is not None and not any(k.id == calling_key_id and k.status == "active" for k in keys):
        raise ExpiringKeyCannotManage(
            "This key is in its rotation grace period: it can still call the API, but only the new key "
            "or the portal can revoke keys."
        )
    if not keys:
        return None
    for key in keys:
        key.status, key.revoked_at = "revoked", now
        db.session.add(_event(account.id, key.id, "revoked", actor, now))
    db.session.commit()
    signals.keys_retired.send(None, key_hashes=[k.key_hash for k in keys])
    signals.account_keys_changed.send(account.id)
    revoked = next((k for k in keys if k.expires_at is None), keys[0])
    webhook_events.emit(account.id, "key.revoked", lambda: revoked.to_dict(account.tier))
    return revoked


def audit_trail(account_id: int, limit: int = 50) -> list[KeyEvent]:
    """The events, newest first, with any grace period that has run out recorded first."""
    expire_lapsed(account_id, utcnow())
    return events(account_id, limit)


def events(account_id: int, limit: int = 50) -> list[KeyEvent]:
    return list(
        db.session.scalars(
            sa.select(KeyEvent)
            .where(KeyEvent.account_id == account_id)
            .order_by(KeyEvent.at.desc(), KeyEvent.id.desc())
            .limit(limit)
        )
    )


def _event(account_id: int, key_id: str, event: str, actor: Actor, at: datetime, emergency: bool = False) -> KeyEvent:
    return KeyEvent(
        account_id=account_id,
        key_id=key_id,
        event=event,
        emergency=emergency,
        at=at,
        actor=actor.email,
        ip=actor.ip,
        user_agent=(actor.user_agent or "")[:512] or None,
    )


@deletion.step("revoke-keys", deletion.KEYS)
def _revoke_keys_of_deleted_account(account: Account, actor: Actor) -> None:
    """The next call with any of its keys is a 401 in every process."""
    revoke(account, actor)


@deletion.step("key-rows", deletion.ROWS, tables=("api_keys", "key_events"))
def _delete_key_rows(account: Account, _actor) -> None:
    db.session.execute(sa.delete(KeyEvent).where(KeyEvent.account_id == account.id))
    db.session.execute(sa.delete(ApiKey).where(ApiKey.account_id == account.id))
