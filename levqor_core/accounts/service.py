"""Accounts: sign-up, password check, tier changes."""

import re
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.limits import key_cache, tiers

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8
# argon2id with the OWASP Password Storage Cheat Sheet's first configuration: m=19 MiB, t=2, p=1.
# argon2-cffi's default (RFC 9106's low-memory profile, m=64 MiB, t=3, p=4) took 64 MiB and ~200 ms
# per hash here; this takes 19 MiB and ~40 ms. Hashes made with other parameters still verify
# (each hash carries its own) and are rehashed with these at the next successful log-in.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# Hashes are computed by a pool of MAX_CONCURRENT_HASHES threads per process, and request threads
# wait for it: a burst of log-ins (10 at once were allowed per address) queues instead of adding
# 10 x 19 MiB to a 512 MB dyno. A pool rather than a semaphore, because glibc keeps a freed hash's
# memory in the arena of the thread that allocated it: hashing on any of Flask's 10 request threads
# left up to 10 x 19 MiB resident even with only 2 at a time (measured: +115 MiB instead of +40).
MAX_CONCURRENT_HASHES = 2
_hashing = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_HASHES, thread_name_prefix="argon2")


def _hash(password: str) -> str:
    return _hashing.submit(_hasher.hash, password).result()


def _verify(password_hash: str, password: str) -> None:
    _hashing.submit(_hasher.verify, password_hash, password).result()


# Verifying against this keeps unknown-email log-ins as slow as wrong-password ones.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


class AccountError(ValueError):
    """A readable reason an account could not be created or changed."""


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def sign_up(email: str, password: str) -> Account:
    email = normalise_email(email)
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise AccountError("Enter a valid email address.")
    if len(password or "") < MIN_PASSWORD:
        raise AccountError(f"Use a password of at least {MIN_PASSWORD} characters.")
    if len(password) > 1024:
        raise AccountError("That password is too long.")
    account = Account(email=email, password_hash=_hash(password), tier=tiers.DEFAULT_TIER)
    db.session.add(account)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise AccountError("An account with that email already exists.") from None
    return account


def authenticate(email: str, password: str) -> Account | None:
    account = by_email(email)
    try:
        _verify(account.password_hash if account else _DUMMY_HASH, password or "")
    except (VerificationError, InvalidHashError):
        return None
    if account and _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hash(password)
        db.session.commit()
    return account


def by_email(email: str) -> Account | None:
    return db.session.scalar(sa.select(Account).where(Account.email == normalise_email(email)))


def set_tier(account: Account, tier_name: str) -> Account:
    """Move an account to another tier; its keys see the new limits on their next call."""
    try:
        account.tier = tiers.get(tier_name).name
    except KeyError:
        raise AccountError(f"Unknown tier {tier_name!r}; choose one of {', '.join(tiers.TIERS)}.") from None
    db.session.commit()
    key_cache.forget_account(account.id)
    return account
