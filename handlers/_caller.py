"""Who is calling: the API key's account, or the signed-in portal user."""

from connexion.context import context
from flask import request
from flask_login import current_user

from levqor import keys, problems
from levqor.extensions import db
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
