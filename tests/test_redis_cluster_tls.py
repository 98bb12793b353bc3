"""LIMITS_REDIS_URL naming one node of a Redis Cluster that serves TLS only (`rediss://`, as a
managed cluster with in-transit encryption does), the certificate checked against the CA the URL
names (`ssl_cert_reqs` left at redis-py's default, `required`): the app finds the cluster, and the
gate, the usage flush, the key cache and Flask-Limiter all run on it over TLS, to every primary the
slot map names. A call served in outage mode would answer 200 too: what is asserted is what
reached the cluster's primaries."""

import logging

import pytest
import redis
import redis.cluster
import sqlalchemy as sa
from flask_migrate import upgrade

from levqor_core import redis_conn, redis_scripts
from levqor_core.accounts.models import Account
from levqor_core.app import create_app
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily
from levqor_core.web.limiter import limiter

from .conftest import CHEAP_HASHING, csrf_from
from .helpers import run_on_own_loop
from .servers import RedisClusterServer


@pytest.fixture(scope="module")
def tls_cluster():
    """3 primaries, no replicas, TLS only; started by this module alone (tests/xdist_groups.py
    keeps the module on one worker)."""
    server = RedisClusterServer(nodes=3, replicas=0, tls=True).start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tls_cx(app_config, tls_cluster):
    """The suite's app with LIMITS_REDIS_URL on the TLS cluster and Flask-Limiter's storage with it
    (the setting's default); the process's one Limiter is given back to the suite's app after."""
    kept = dict(limiter.__dict__)
    # init_app merges the app's storage options into this dict in place: the TLS ones must not
    # stay in the one the suite's app gets back.
    limiter._storage_options = dict(limiter._storage_options)
    settings = {k: v for k, v in app_config.items() if k != "RATELIMIT_STORAGE_URI"}
    cx = create_app(settings | CHEAP_HASHING | {"LIMITS_REDIS_URL": tls_cluster.url})
    with cx.app.app_context():
        upgrade()  # at head already when the suite's app ran first: nothing to do
    yield cx
    cx.app.extensions["levqor.request_log"].clear()
    limiter.__dict__.update(kept)


@pytest.fixture
def app(tls_cx):
    return tls_cx.app  # the app the suite's fixtures (make_account, the clean state) act on


def _on_the_cluster(tls_cluster, pattern: str) -> dict[str, bytes | None]:
    """Every key matching `pattern` on every primary, read over TLS with the certificate checked."""
    client = redis.cluster.RedisCluster.from_url(tls_cluster.url, socket_timeout=5)
    try:
        found = {}
        for node in client.get_primaries():
            for name in client.scan_iter(match=pattern, count=1000, target_nodes=node):
                kind = client.type(name)
                found[name.decode()] = client.get(name) if kind == b"string" else kind
        return found
    finally:
        client.close()


def test_a_rediss_url_naming_one_node_is_taken_for_the_cluster_it_is(app, tls_cx, tls_cluster):
    assert isinstance(app.extensions["levqor.limits_redis"], redis.cluster.RedisCluster)
    assert app.config["RATELIMIT_STORAGE_URI"].startswith("redis+cluster://")
    assert isinstance(app.extensions["levqor.gate"]._async_client_factory(), redis_scripts.ClusterScriptClient)
    nodes = {(n.host, n.port) for n in app.extensions["levqor.limits_redis"].get_primaries()}
    assert nodes == {("127.0.0.1", port) for port in tls_cluster.ports}  # all three, from the slot map


def test_metered_calls_are_counted_on_the_cluster_and_flushed_over_tls(app, tls_cx, tls_cluster, make_account, caplog):
    counted = {}
    for tier in ("sandbox", "pro", "enterprise"):  # accounts 1, 2, 3: buckets on more than one primary
        account_id, key = make_account(tier=tier)
        with tls_cx.test_client() as client:
            for _ in range(3):
                with caplog.at_level(logging.WARNING, logger="levqor_core.limits.gate"):
                    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
        counted[account_id] = 3
    assert "gate degraded" not in caplog.text  # every call ran gate.lua on the cluster, none in outage mode
    gate = app.extensions["levqor.gate"]
    assert not gate.outage.pending
    on_cluster = _on_the_cluster(tls_cluster, "lvq:*:u:*")
    assert {int(name.split(":u:")[1].split(":")[0]): int(v) for name, v in on_cluster.items()} == counted
    slots = {tls_cluster.primary_of(metering.usage_key(a, "any")) for a in counted}
    assert len(slots) > 1  # the script client reached more than the node the URL names

    with app.app_context():
        assert metering.flush_usage(app.extensions["levqor.limits_redis"]) == 3
        rows = db.session.execute(sa.select(UsageDaily.account_id, UsageDaily.calls)).all()
    assert dict(rows) == counted


def test_the_key_cache_lives_on_the_cluster_and_a_revocation_reaches_it(app, tls_cx, tls_cluster, make_account):
    account_id, key = make_account(tier="pro")
    with tls_cx.test_client() as client:
        assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
        records = _on_the_cluster(tls_cluster, f"lvq:{metering.tag(account_id)}:k:*")
        assert list(records.values()) == [b"hash"]  # the key's record, cached on its primary
        with app.app_context():
            keys.revoke(db.session.get(Account, account_id), keys.Actor(email="test"))
        assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 401


def test_flask_limiter_counts_on_the_cluster_over_tls(app, tls_cx, tls_cluster):
    client = tls_cx.test_client(follow_redirects=False, client=("198.51.100.77", 40000))
    token = csrf_from(client.get("/login").text)
    codes = [
        client.post("/login", data={"email": "x@example.com", "password": "nope", "csrf_token": token}).status_code
        for _ in range(11)
    ]
    assert codes == [401] * 10 + [429]
    assert not limiter._storage_dead  # the cluster's counts, not the per-process fallback
    windows = _on_the_cluster(tls_cluster, "*lvq-fl/*")
    assert any("198.51.100.77" in name for name in windows), windows  # Flask-Limiter's window, on a primary


def test_the_script_client_refuses_a_node_whose_certificate_no_trusted_ca_signed(tls_cluster):
    untrusted = tls_cluster.url.split("?", 1)[0]  # no CA named: the system's store, which never signed it
    client = redis_scripts.ClusterScriptClient(untrusted, timeout=5, connect_timeout=5)
    script = client.register_script("return 1")
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        run_on_own_loop(script(["lvq:{1}:x"]))
    with pytest.raises(redis_conn.UNAVAILABLE, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        redis.cluster.RedisCluster.from_url(untrusted, socket_timeout=5).ping()  # the app's other client, alike
