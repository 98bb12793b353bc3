"""Flask-Limiter: the instance, a guard for the callables handed to it, and its response headers.

The portal's and the session-authenticated API routes' limits (log-in, sign-up, key creation,
bursts) are Flask-Limiter's; API-key calls are limited by the gate (`levqor_core.limits.gate`)."""

import functools
import logging
import time

from flask.globals import _cv_request
from flask_limiter import Limiter

from levqor_core.limits import headers as limit_headers


def _no_default_key():
    # Every limit names its own key function; a missing one is a programming error.
    raise RuntimeError("limits must pass key_func")


limiter = Limiter(key_func=_no_default_key, headers_enabled=True)


def limiter_callable(default):
    """For every key, limit-value, exempt_when and on_breach function handed to Flask-Limiter.

    Flask-Limiter takes any exception raised while it evaluates a limit for its storage failing:
    it switches the whole process to per-process memory counters for a while, so one anonymous
    request that made a key function raise let the next attempts of real accounts through. The
    wrapped function returns `default` instead (and logs), so only a real storage error can
    trip the fallback."""

    def wrap(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception:
                logging.getLogger(__name__).exception("limiter callable %s raised", fn.__qualname__)
                return default

        return guarded

    return wrap


_POLICY_NAMES = {"second": "burst", "minute": "minute", "hour": "hourly", "day": "daily"}


def _limit_checked() -> bool:
    """Whether a limit was evaluated in this request: Flask-Limiter keeps its per-request state
    on the request context, created by the first limit it checks."""
    ctx = _cv_request.get(None)
    return ctx is not None and hasattr(ctx, "_limiter_request_context")


def _only_where_limited(hook):
    """A Flask-Limiter after-request or teardown hook, run only in a request where a limit was
    checked: elsewhere (every API-key call) it finds no limit to report, no conditional deduction
    and nothing to release, after creating the state to find that out."""

    @functools.wraps(hook)
    def hook_where_limited(arg):
        return hook(arg) if _limit_checked() else arg

    return hook_where_limited


def add_headers(response):
    """A Flask-Limiter limit's response gets the IETF RateLimit pair next to its X-RateLimit-*,
    like the gate's; and Retry-After, which Flask-Limiter adds to every response, only on a refusal."""
    if not _limit_checked():
        return response
    current = limiter.current_limit
    if current is None:
        return response
    if response.status_code < 400:
        response.headers.pop("Retry-After", None)
    elif response.headers.get("Retry-After") == "0":
        # Flask-Limiter rounds down: in a window's last second it would tell the client to retry
        # at once, into the same refusal.
        response.headers["Retry-After"] = "1"
    if "RateLimit" not in response.headers:
        name = _POLICY_NAMES.get(current.limit.GRANULARITY.name, current.limit.GRANULARITY.name)
        seconds_left = max(0, int(current.reset_at - time.time()))
        response.headers["RateLimit-Policy"] = limit_headers.policy(
            name, current.limit.amount, current.limit.get_expiry()
        )
        response.headers["RateLimit"] = limit_headers.ietf_remaining(name, current.remaining, seconds_left)
    return response


def init_app(app) -> None:
    """Flask-Limiter on the app, with the headers above, without its per-request pass, and with
    its response and teardown hooks only where a limit was checked."""
    # Registered before Flask-Limiter's own hook, so it runs after it (Flask runs them in reverse).
    app.after_request(add_headers)
    limiter.init_app(app)
    for hooks in (app.after_request_funcs[None], app.teardown_request_funcs[None]):
        for i, hook in enumerate(hooks):
            if getattr(getattr(hook, "func", hook), "__module__", "").startswith("flask_limiter."):
                hooks[i] = _only_where_limited(hook)
    if not (app.config.get("RATELIMIT_DEFAULT") or app.config.get("RATELIMIT_APPLICATION")):
        # Every limit here is a decorator's, and a decorated view checks its own limits. The
        # before_request pass only looks for default and application limits, finds none, and
        # cost ~11% of every API call (README "Speed").
        app.before_request_funcs[None].remove(limiter._check_request_limit)
