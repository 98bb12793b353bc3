"""/key: the account's API key."""

from datetime import timedelta

from flask_login import current_user

from levqor_core import problems
from levqor_core.accounts import service as accounts
from levqor_core.keys import service as keys
from levqor_core.limits import tiers
from levqor_core.web.limiter import limiter, limiter_callable

from . import _caller
from ._reply import ok


@limiter_callable(default="key-new:unidentified")
def _creations_key() -> str:
    return f"key-new:{current_user.id}"


@limiter_callable(default=False)
def _not_counted() -> bool:
    # An anonymous session gets its 401, and an unconfirmed account its 403, from the handler: neither
    # spends the day's creation.
    return not _caller.signed_in() or not accounts.may_create_keys(current_user)


# The spec allows only the portal session here: a leaked key cannot create keys or spend the
# owner's daily creation.
@limiter.limit(f"{tiers.KEY_CREATIONS_PER_DAY} per day", key_func=_creations_key, exempt_when=_not_counted)
def create_key(body=None):
    account = _caller.account()
    if not accounts.may_create_keys(account):
        raise problems.EmailNotVerified(
            f"Confirm {account.email} first: open the link we emailed you, or ask for a new one on /developer/api-keys."
        )
    # An empty body (no content type) arrives as b"": it means "no options".
    options = body if isinstance(body, dict) else {}
    grace = timedelta(seconds=int(options.get("grace_period_seconds") or 0))
    issued = keys.issue(account, _caller.actor(), grace)
    # The only response that ever holds the raw key: no cache may keep it.
    return ok(keys.to_dict(issued.record, account) | {"key": issued.raw}, 201, {"Cache-Control": "no-store"})


@_caller.session_limited
def get_key():
    account = _caller.account()
    visible = keys.visible_keys(account.id)
    active = next((k for k in visible if k.status == "active"), None)
    if active is None:
        raise problems.NotFound("This account has no active key; create one on the portal.")
    expiring = [keys.to_dict(k, account) for k in visible if k.status == "expiring"]
    return ok(keys.to_dict(active, account) | {"expiring": expiring})


@_caller.session_limited
def revoke_key():
    account = _caller.account()
    revoked = keys.revoke(account, _caller.actor(), calling_key_id=_caller.token_info().get("key_id"))
    if revoked is None:
        raise problems.NotFound("This account has no active key.")
    return ok(keys.to_dict(revoked, account))


@_caller.session_limited
def list_key_events():
    personal = not _caller.by_api_key()  # the signed-in owner sees who, from where
    return ok({"data": [keys.event_to_dict(e, personal) for e in keys.audit_trail(_caller.account_id())]})
