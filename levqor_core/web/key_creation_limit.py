"""The daily key-creation limits: Flask-Limiter limits, shared by every door that spends them.

The API's POST /api/key/new and the portal's create/roll route spend the same per-account
counter (same limit, same window, one shared scope), and `next_creation_at` reads that very
window, so what the portal shows is what the limit will do.

A leaked key must not lock its owner out, so the portal also offers one emergency replacement a
day (a fresh log-in, then the key is revoked at once and a new one issued) beside that limit: a
second, separate limit (`emergency_limited`, read by `next_emergency_at`), so it neither spends nor
is blocked by the daily creation. After GitHub reports a key of the account in public (and it is
revoked), the next replacement is owed whatever today's counts: it neither checks nor spends that
limit either (`keys.leaks.replacement_owed`).
"""

import logging
import math
from datetime import UTC, datetime, timedelta

from flask import current_app
from flask_login import current_user
from limits import parse

from levqor_core import tiers
from levqor_core.accounts import reauth
from levqor_core.accounts import service as accounts
from levqor_core.keys import leaks
from levqor_core.web.limiter import limiter, limiter_callable

log = logging.getLogger(__name__)

LIMIT = f"{tiers.KEY_CREATIONS_PER_DAY} per day"
SCOPE = "key-creation"  # shared: the counter does not depend on which route spends it

EMERGENCY_REPLACEMENTS_PER_DAY = 1
EMERGENCY_LIMIT = f"{EMERGENCY_REPLACEMENTS_PER_DAY} per day"
EMERGENCY_SCOPE = "key-emergency"


def _counter_key(account_id: int | str) -> str:
    return f"key-new:{account_id}"


def _emergency_counter_key(account_id: int | str) -> str:
    return f"key-emergency:{account_id}"


@limiter_callable(default=_counter_key("unidentified"))
def _signed_in_account() -> str:
    return _counter_key(current_user.id)


@limiter_callable(default=_emergency_counter_key("unidentified"))
def _signed_in_account_emergency() -> str:
    return _emergency_counter_key(current_user.id)


@limiter_callable(default=False)
def _not_counted() -> bool:
    # An anonymous session gets its 401 (API) or log-in redirect (portal), and an account whose email
    # is not confirmed its 403 (API) or notice (portal), without spending the day's creation.
    return not current_user.is_authenticated or not accounts.may_create_keys(current_user)


@limiter_callable(default=False)
def _emergency_not_counted() -> bool:
    # The same, and a session without a fresh log-in: it is sent to re-authenticate first, and
    # only the replacement that follows spends the day's one. A replacement owed after a leak
    # spends nothing.
    return _not_counted() or not reauth.fresh_log_in() or leaks.replacement_owed(current_user.id)


# Key creation is for the signed-in portal session only (the spec allows nothing else), so the
# counter belongs to the session's account: a leaked key cannot spend it.
limited = limiter.shared_limit(LIMIT, scope=SCOPE, key_func=_signed_in_account, exempt_when=_not_counted)

# The emergency replacement is a portal route only (a fresh log-in is a portal session's).
emergency_limited = limiter.shared_limit(
    EMERGENCY_LIMIT, scope=EMERGENCY_SCOPE, key_func=_signed_in_account_emergency, exempt_when=_emergency_not_counted
)


def next_creation_at(account_id: int) -> datetime | None:
    """When the limit lets this account create a key again; None if it may now (or the limit's
    storage does not answer: the limit itself then decides on the click)."""
    return _window_reset(LIMIT, _counter_key(account_id), SCOPE)


def next_emergency_at(account_id: int) -> datetime | None:
    """When this account may make its next emergency replacement; None if it may now."""
    if leaks.replacement_owed(account_id):
        return None
    return _window_reset(EMERGENCY_LIMIT, _emergency_counter_key(account_id), EMERGENCY_SCOPE)


def creation_after_spending(now: datetime) -> datetime:
    """When a key is possible again after one is created at `now` with the limit still open:
    the limit's window then starts (a fixed window opens at its first hit)."""
    return now + timedelta(seconds=parse(LIMIT).get_expiry())


def emergency_after_spending(now: datetime) -> datetime:
    """When "Replace now" is possible again after it is used at `now` (its own limit's window)."""
    return now + timedelta(seconds=parse(EMERGENCY_LIMIT).get_expiry())


def _window_reset(limit: str, counter_key: str, scope: str) -> datetime | None:
    item = parse(limit)
    # The identifiers Flask-Limiter uses for a shared limit: [key prefix,] key, scope.
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    identifiers = [p for p in (prefix, counter_key, scope) if p]
    try:
        window = limiter.limiter.get_window_stats(item, *identifiers)
    except limiter.storage.base_exceptions as err:
        log.warning("%s window unavailable: %s", scope, err)
        return None
    if window.remaining > 0:
        return None
    return datetime.fromtimestamp(math.ceil(window.reset_time), UTC)
