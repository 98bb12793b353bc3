"""Accounts: sign-up, password check, tier changes."""

import re

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError

from . import gate, tiers
from .extensions import db
from .models import Account

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD = 8
_hasher = PasswordHasher()
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
    account = Account(email=email, password_hash=_hasher.hash(password), tier=tiers.DEFAULT_TIER)
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
        _hasher.verify(account.password_hash if account else _DUMMY_HASH, password or "")
    except (VerificationError, InvalidHashError):
        return None
    if account and _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
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
    gate.forget_account(account.id)
    return account
