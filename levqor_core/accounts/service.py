"""Accounts: creation by operators, lookups, tier, confirmation, roles and sessions.

Sign-up, log-in, confirmation and reset over the web are Flask-Security-Too's (accounts.security);
these are the rules the CLI, the portal and the API share on top of it."""

import sqlalchemy as sa
from flask_security import hash_password
from flask_security.confirmable import confirm_user

from levqor_core import problems, signals, tiers
from levqor_core.accounts.models import Account, Role
from levqor_core.accounts.security import MIN_PASSWORD, security  # noqa: F401  (MIN_PASSWORD: the portal shows it)
from levqor_core.extensions import db

OPS_ROLE = "ops"
ROLES = {OPS_ROLE: "Operators: /developer/ops"}


class AccountError(ValueError):
    """A readable reason an account could not be created or changed."""


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def by_email(email: str) -> Account | None:
    return db.session.scalar(sa.select(Account).where(Account.email == normalise_email(email)))


def create(email: str, password: str, confirmed: bool = True) -> Account:
    """An account made by an operator (`flask accounts create`): the address is taken as confirmed."""
    try:
        email = security.mail_util.validate(email)
    except ValueError as err:
        raise AccountError(str(err)) from None
    problems, password = security.password_util.validate(password, True, email=email)
    if problems:
        raise AccountError(" ".join(problems))
    if by_email(email) is not None:
        raise AccountError("An account with that email already exists.")
    account = security.datastore.create_user(email=email, password=hash_password(password))
    if confirmed:
        confirm_user(account)
    db.session.commit()
    return account


def write_as_a_sign_up_does(account: Account) -> None:
    """One row written, as a new account's sign-up writes one, for a sign-up with a taken address.

    Both answers must take as long: a new address's commits an INSERT (a durable write: an fsync
    for SQLite, a WAL flush for PostgreSQL), and a taken address, writing nothing, answered ~30 ms
    sooner on SQLite (bench/account_timing.py --sqlite). The account's row is written unchanged."""
    db.session.execute(sa.update(Account).where(Account.id == account.id).values(email=Account.email))


def confirm(account: Account) -> bool:
    """Mark the address confirmed (an operator vouching for it); False if it already was."""
    changed = confirm_user(account)
    db.session.commit()
    return changed


def may_create_keys(account: Account) -> bool:
    """Key creation waits for a confirmed email: the address is where quota and security mail goes."""
    return account.confirmed_at is not None


def require_confirmed(account: Account) -> None:
    """What every door that creates a key checks first (the API and the portal)."""
    if not may_create_keys(account):
        raise problems.EmailNotVerified(
            f"Confirm {account.email} first: open the link we emailed you, or ask for a new one on /developer/api-keys."
        )


def end_all_sessions(account: Account) -> None:
    """A new session identifier: every cookie issued so far (any browser) stops working at once."""
    security.datastore.set_uniquifier(account)
    db.session.commit()


def grant_role(account: Account, role_name: str) -> None:
    if role_name not in ROLES:
        raise AccountError(f"Unknown role {role_name!r}; choose one of {', '.join(ROLES)}.")
    if account.confirmed_at is None:
        raise AccountError(f"{account.email} has not confirmed its email address yet.")
    role = security.datastore.find_or_create_role(role_name, description=ROLES[role_name])
    security.datastore.add_role_to_user(account, role)
    db.session.commit()


def revoke_role(account: Account, role_name: str) -> bool:
    role = db.session.scalar(sa.select(Role).where(Role.name == role_name))
    removed = role is not None and security.datastore.remove_role_from_user(account, role)
    db.session.commit()
    return bool(removed)


def is_operator(account) -> bool:
    """A confirmed account with the `ops` role. Unconfirmed: never, since anyone can sign up with
    any address (roles are only granted to confirmed accounts; this holds if one was confirmed and
    its email then changed back to pending)."""
    if not getattr(account, "is_authenticated", False) or account.confirmed_at is None:
        return False
    return account.has_role(OPS_ROLE)


def set_tier(account: Account, tier_name: str) -> Account:
    """Move an account to another tier; its keys see the new limits on their next call."""
    try:
        account.tier = tiers.get(tier_name).name
    except KeyError:
        raise AccountError(f"Unknown tier {tier_name!r}; choose one of {', '.join(tiers.TIERS)}.") from None
    db.session.commit()
    signals.account_limits_changed.send(account.id)
    return account
