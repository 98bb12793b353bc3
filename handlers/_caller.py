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


def _session_burst() -> str:
    return f"{tiers.get(account().tier).burst_per_second} per second"


def _session_limit_key() -> str:
    return f"session:{account_id()}"


# Portal-session calls to the API get their tier's burst limit from Flask-Limiter, per account
# (with its rate-limit headers); calls with a key are limited and metered by the gate instead.
session_limited = limiter.limit(_session_burst, key_func=_session_limit_key, exempt_when=by_api_key)
