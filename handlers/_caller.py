"""Who is calling: the API key's account, or the signed-in portal user."""

from connexion.context import context
from flask import request
from flask_login import current_user

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.web import session_limit


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


# Portal-session calls to the API share their tier's burst limit per account with the portal's own
# writes (levqor_core.web.session_limit); key calls are limited and metered by the gate.
session_limited = session_limit.session_limited(is_key_call=by_api_key)
