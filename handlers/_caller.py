"""Who is calling: the API key's account, or the signed-in portal user."""

from connexion.context import context
from flask import request
from flask_login import current_user

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.limits import tiers
from levqor_core.web.limiter import limiter, limiter_callable


def token_info() -> dict:
    return context.get("token_info") or {}


def by_api_key() -> bool:
    return "account_id" in token_info()


def account_id() -> int:
    info = token_info()
    if "account_id" in info:
        return info["account_id"]
    if current_user.is_authenticated:
        return current_user.id
    raise problems.NotAuthenticated("Sign in to the portal, or send your key in the x-api-key header.")


def account() -> Account:
    found = db.session.get(Account, account_id())
    if found is None:
        raise problems.NotAuthenticated("This account no longer exists.")
    return found


def actor() -> keys.Actor:
    email = current_user.email if current_user.is_authenticated else f"api-key:{token_info().get('key_id')}"
    return keys.Actor(
        email=email,
        ip=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
    )


def signed_in() -> bool:
    """A signed-in portal user (not an anonymous cookie); loads the user once per request."""
    return bool(current_user.is_authenticated)


# Flask-Limiter calls these; see levqor_core.web.limiter.limiter_callable for why none of them may raise.
@limiter_callable(default=False)
def _not_limited_here() -> bool:
    # Key calls are limited by the gate; anonymous ones get their 401 from the handler without
    # spending anyone's budget.
    return by_api_key() or not signed_in()


_DEFAULT_SESSION_BURST = f"{tiers.get(tiers.DEFAULT_TIER).burst_per_second} per second"


# Flask-Limiter evaluates these before exempt_when, so key and anonymous calls reach them too:
# they answer for those without touching the (anonymous) user, which has no tier and no id.
@limiter_callable(default=_DEFAULT_SESSION_BURST)
def _session_burst() -> str:
    if by_api_key() or not signed_in():
        return _DEFAULT_SESSION_BURST
    return f"{tiers.get(current_user.tier).burst_per_second} per second"


@limiter_callable(default="session:unidentified")
def _session_limit_key() -> str:
    if by_api_key() or not signed_in():
        return "session:unidentified"
    return f"session:{current_user.id}"


# Portal-session calls to the API share their tier's burst limit per account, across operations,
# from Flask-Limiter (with its rate-limit headers); key calls are limited and metered by the gate.
session_limited = limiter.shared_limit(
    _session_burst, scope="session-burst", key_func=_session_limit_key, exempt_when=_not_limited_here
)
