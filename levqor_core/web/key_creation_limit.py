"""The daily key-creation limit: one Flask-Limiter limit, shared by every door that creates a key.

The API's POST /api/key/new and the portal's create/roll route spend the same per-account
counter (same limit, same window, one shared scope), and `next_creation_at` reads that very
window, so what the portal shows is what the limit will do.
"""

import logging
import math
from datetime import UTC, datetime

from flask import current_app
from flask_login import current_user
from limits import parse

from levqor_core.accounts import service as accounts
from levqor_core.limits import tiers
from levqor_core.web.limiter import limiter, limiter_callable

log = logging.getLogger(__name__)

LIMIT = f"{tiers.KEY_CREATIONS_PER_DAY} per day"
SCOPE = "key-creation"  # shared: the counter does not depend on which route spends it


def _counter_key(account_id: int | str) -> str:
    return f"key-new:{account_id}"


@limiter_callable(default=_counter_key("unidentified"))
def _signed_in_account() -> str:
    return _counter_key(current_user.id)


@limiter_callable(default=False)
def _not_counted() -> bool:
    # An anonymous session gets its 401 (API) or log-in redirect (portal), and an account whose email
    # is not confirmed its 403 (API) or notice (portal), without spending the day's creation.
    return not current_user.is_authenticated or not accounts.may_create_keys(current_user)


# Key creation is for the signed-in portal session only (the spec allows nothing else), so the
# counter belongs to the session's account: a leaked key cannot spend it.
limited = limiter.shared_limit(LIMIT, scope=SCOPE, key_func=_signed_in_account, exempt_when=_not_counted)


def next_creation_at(account_id: int) -> datetime | None:
    """When the limit lets this account create a key again; None if it may now (or the limit's
    storage does not answer: the limit itself then decides on the click)."""
    item = parse(LIMIT)
    # The identifiers Flask-Limiter uses for a shared limit: [key prefix,] key, scope.
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    identifiers = [p for p in (prefix, _counter_key(account_id), SCOPE) if p]
    try:
        window = limiter.limiter.get_window_stats(item, *identifiers)
    except limiter.storage.base_exceptions as err:
        log.warning("key-creation window unavailable: %s", err)
        return None
    if window.remaining > 0:
        return None
    return datetime.fromtimestamp(math.ceil(window.reset_time), UTC)
