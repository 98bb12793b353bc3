"""LIMITS_REDIS_URL: the API call's path on one Redis, RQ and the cron lease on REDIS_URL's."""

import pytest

from levqor_core.app import create_app
from levqor_core.metering import counters as metering
from levqor_core.web.limiter import limiter

from .conftest import CHEAP_HASHING, Portal
from .servers import RedisServer


@pytest.fixture
def limits_redis():
    server = RedisServer().start()
    yield server
    server.close()


def _names(url: str) -> set[str]:
    import redis

    return {k.decode() for k in redis.Redis.from_url(url).scan_iter(count=1000)}


@pytest.fixture
def limiter_kept():
    """Flask-Limiter has one Limiter per process, which takes the storage of the last app it was
    given: the suite's app gets its own back after the test."""
    kept = dict(limiter.__dict__)
    yield
    limiter.__dict__.update(kept)


def test_the_api_path_lands_on_the_limits_redis_and_rq_on_the_other(
    app_config, app, redis_server, limits_redis, limiter_kept
):
    settings = {k: v for k, v in app_config.items() if k != "RATELIMIT_STORAGE_URI"}
    cx = create_app(settings | CHEAP_HASHING | {"LIMITS_REDIS_URL": limits_redis.url, "RQ_ASYNC": False})
    split = cx.app
    assert split.extensions["levqor.limits_redis"] is not split.extensions["levqor.redis"]
    redis_server_names_before = _names(redis_server.url)

    portal = Portal(cx).sign_up()  # Flask-Limiter counts the sign-up and the log-in
    key = portal.new_key().json()["key"]
    client = cx.test_client()
    echo = {"workflow": "echo", "input": {}}
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    assert client.post("/api/v1/jobs", headers={"x-api-key": key}, json=echo).status_code == 202
    assert client.post("/api/sandbox/v1/jobs", headers={"x-api-key": key}, json=echo).status_code == 202
    assert client.get("/api/v1/workflows", headers={"x-api-key": "lvq_" + "0" * 32 + "_000000"}).status_code == 401
    with split.app_context():
        assert metering.flush_usage(split.extensions["levqor.limits_redis"]) == 1
    # The calls onto their log stream too: written by this flush, or by the recorder's own thread
    # (every REQUEST_LOG_FLUSH_SECONDS) on a slow machine; the `}:log` name below shows it either way.
    split.extensions["levqor.request_log"].flush()

    on_limits = _names(limits_redis.url)
    on_queues = _names(redis_server.url) - redis_server_names_before
    assert any("/lvq-fl/" in n for n in on_limits), on_limits  # Flask-Limiter's storage
    assert any(":k:" in n for n in on_limits)  # the key's record
    assert any(":u:" in n for n in on_limits) and any(":d:" in n for n in on_limits)  # its counters
    assert any(":sbx:" in n for n in on_limits)  # the sandbox job
    assert any(n.endswith("}:log") for n in on_limits)  # the streams' feeds (levqor logs tail,
    assert any("}:events:" in n for n in on_limits), on_limits  # levqor listen)
    assert not any(n.startswith("rq:") for n in on_limits)
    assert any(n.startswith("rq:") for n in on_queues), on_queues  # the production job's queue
    api_path = ("/lvq-fl/", ":k:", ":u:", ":d:", ":sbx:", "}:log", "}:events:")
    assert not any(part in n for n in on_queues for part in api_path), on_queues


def test_unset_it_is_the_redis_url_client(app):
    assert app.extensions["levqor.limits_redis"] is app.extensions["levqor.redis"]
    assert app.config["LIMITS_REDIS_URL"] == app.config["REDIS_URL"]
