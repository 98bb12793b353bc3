"""/usage"""

from levqor_core import redis_conn
from levqor_core.columns import utcnow
from levqor_core.keys import service as keys
from levqor_core.metering import counters as metering

from . import _caller
from ._reply import Reply, ok


@_caller.session_limited
def get_usage() -> Reply:
    """The account's usage this period and today's sandbox calls."""
    account = _caller.account()
    key_id = _caller.token_info().get("key_id")
    if key_id is None:
        active = keys.active_key(account.id)
        key_id = active.id if active else None
    return ok(metering.usage_snapshot(redis_conn.for_limits(), account, key_id, utcnow()))
