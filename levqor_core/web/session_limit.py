"""The per-account burst limit of signed-in portal sessions: the tier's calls per second, one
counter per account shared by every route that spends it (the session's API calls and the
portal's own writes), from Flask-Limiter with its rate-limit headers. Key calls are limited and
metered by the gate instead, and anonymous calls get their 401 or log-in page without spending
anyone's budget."""

from collections.abc import Callable

from flask_login import current_user

from levqor_core import tiers
from levqor_core.web.limiter import limiter, limiter_callable

SCOPE = "session-burst"
_DEFAULT_BURST = f"{tiers.get(tiers.DEFAULT_TIER).burst_per_second} per second"
_UNIDENTIFIED = "session:unidentified"


def _signed_in() -> bool:
    return bool(current_user.is_authenticated)


def session_limited(is_key_call: Callable[[], bool] = lambda: False):
    """The shared limit as a decorator; `is_key_call` says when the request is a key's (the gate's)."""

    def session_caller() -> bool:
        return not is_key_call() and _signed_in()

    # Flask-Limiter calls these; see limiter_callable for why none of them may raise. It evaluates
    # the limit and key before exempt_when, so key and anonymous calls reach them too: they answer
    # for those without touching the (anonymous) user, which has no tier and no id.
    @limiter_callable(default=_DEFAULT_BURST)
    def burst() -> str:
        if not session_caller():
            return _DEFAULT_BURST
        return f"{tiers.get(current_user.tier).burst_per_second} per second"

    @limiter_callable(default=_UNIDENTIFIED)
    def counter_key() -> str:
        return f"session:{current_user.id}" if session_caller() else _UNIDENTIFIED

    @limiter_callable(default=False)
    def exempt() -> bool:
        return not session_caller()

    return limiter.shared_limit(burst, scope=SCOPE, key_func=counter_key, exempt_when=exempt)


# For the portal's own routes (no key calls reach them).
portal_limited = session_limited()
