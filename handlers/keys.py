"""/key: the account's API key."""

from datetime import timedelta

from levqor_core import problems
from levqor_core.accounts import service as accounts
from levqor_core.keys import service as keys
from levqor_core.web import key_creation_limit as creation_limit

from . import _caller
from ._reply import Reply, ok


# The spec allows only the portal session here: a leaked key cannot create keys or spend the
# owner's daily creation (the portal's create/roll route spends the same one).
@creation_limit.limited
def create_key(*, body: dict | bytes | None = None) -> Reply:
    """Create (or roll to) the account's key; the raw key is in this answer only."""
    account = _caller.account()
    accounts.require_confirmed(account)
    # An empty body (no content type) arrives as b"": it means "no options".
    options = body if isinstance(body, dict) else {}
    grace = timedelta(seconds=int(options.get("grace_period_seconds") or 0))
    issued = keys.issue(account, _caller.actor(), grace)
    # The only response that ever holds the raw key: no cache may keep it.
    return ok(issued.to_dict(account.tier), 201, {"Cache-Control": "no-store"})


@_caller.session_limited
def get_key() -> Reply:
    """The active key's metadata."""
    account = _caller.account()
    shown = keys.key_ring(account.id).to_dict(account.tier)
    if shown is None:
        raise problems.NotFound("This account has no active key; create one on the portal.")
    return ok(shown)


@_caller.session_limited
def revoke_key() -> Reply:
    """Revoke the active key (and any key in its grace period)."""
    account = _caller.account()
    revoked = keys.revoke(account, _caller.actor(), calling_key_id=_caller.token_info().get("key_id"))
    if revoked is None:
        raise problems.NotFound("This account has no active key.")
    return ok(revoked.to_dict(account.tier))


@_caller.session_limited
def list_key_events() -> Reply:
    """The key's audit trail."""
    personal = not _caller.by_api_key()  # the signed-in owner sees who, from where
    return ok({"data": [e.to_dict(personal) for e in keys.audit_trail(_caller.account_id())]})
