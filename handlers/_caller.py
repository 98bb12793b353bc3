"""Who is calling: the API key's account, or the signed-in portal user."""

from connexion.context import context
from flask import request
from flask_login import current_user

from levqor import keys, problems, tiers
from levqor.extensions import db, limiter
from levqor.models import Account


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


def _session_tier() -> tiers.Tier:
    # Read from the already-loaded user and never raising: Flask-Limiter evaluates this before
    # exempt_when, and treats an exception as a storage failure (every limit then goes per process).
    if current_user.is_authenticated:
        return tiers.get(current_user.tier)
    return tiers.get(tiers.DEFAULT_TIER)


def _session_burst() -> str:
    return f"{_session_tier().burst_per_second} per second"


def _session_limit_key() -> str:
    return f"session:{current_user.id}" if current_user.is_authenticated else "session:anonymous"


# Portal-session calls to the API share their tier's burst limit per account, across operations,
# from Flask-Limiter (with its rate-limit headers); key calls are limited and metered by the gate.
session_limited = limiter.shared_limit(
    _session_burst, scope="session-burst", key_func=_session_limit_key, exempt_when=by_api_key
)
