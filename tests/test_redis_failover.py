"""A single Redis replaced by its replica behind the same URL (a managed Redis's failover): the
promoted replica is a new life (its replication id), so the journal replays the calls it never
got; the demoted primary's READONLY drops the connections still open to it. Nothing is a 5xx."""

import secrets
from datetime import UTC, datetime

import pytest
import redis
import sqlalchemy as sa

from levqor_core.app import create_app
from levqor_core.extensions import db
from levqor_core.keys import format as keyfmt
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily

from .conftest import CHEAP_HASHING
from .servers import RedisServer, TcpProxy, wait_for


def _linked(replica: redis.Redis) -> bool:
    return replica.info("replication").get("master_link_status") == "up"


@pytest.fixture
def pair():
    """A primary and its replica (REPLICAOF), and a proxy in front of the primary."""
    primary, replica = RedisServer().start(), RedisServer().start()
    redis.Redis(port=replica.port).replicaof("127.0.0.1", primary.port)
    assert wait_for(lambda: _linked(redis.Redis(port=replica.port)), 10)
    proxy = TcpProxy(primary.port)
    yield primary, replica, proxy
    proxy.close()
    primary.close()
    replica.close()


def test_a_replica_promoted_behind_the_same_url_loses_no_call(app_config, app, make_account, pair):
    primary, replica, proxy = pair
    # Flask-Limiter stays on the suite's Redis (its one Limiter per process: conftest cluster_cx).
    cx = create_app(app_config | CHEAP_HASHING | {"LIMITS_REDIS_URL": proxy.url})
    failing_over = cx.app
    account_id, key = make_account(tier="pro")
    old, new = redis.Redis(port=primary.port), redis.Redis(port=replica.port)
    statuses = []
    with cx.test_client() as client:  # one event loop: one script connection, opened before the failover

        def calls(n: int) -> None:
            statuses.extend(client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code for _ in range(n))

        calls(20)
        assert old.execute_command("WAIT", 1, 2000) == 1  # the replica has these 20
        new.replicaof("NO", "ONE")  # promoted: a new replication id; it will never see what follows
        calls(5)  # counted on the old primary only
        proxy.switch_to(replica.port)  # the URL now names the promoted replica
        old.replicaof("127.0.0.1", replica.port)  # the old primary demoted: its 5 calls are gone
        assert wait_for(lambda: _linked(old), 10)
        calls(10)  # the open connection meets READONLY, is dropped, and the call goes to the new one
    assert statuses == [200] * 35
    gate, r = failing_over.extensions["levqor.gate"], failing_over.extensions["levqor.limits_redis"]
    assert not gate.outage.waiting  # the 10 were counted by the promoted replica, not the outage mode
    gate.flusher.tick()  # the promoted replica is a new life: the journal's 5 are replayed
    with failing_over.app_context():
        metering.flush_usage(r)
        persisted = db.session.scalar(sa.select(UsageDaily.calls).where(UsageDaily.account_id == account_id))
    assert persisted == 35
    failing_over.extensions["levqor.request_log"].clear()


@pytest.mark.parametrize("failover", ["none", "after-replication", "before-replication"])
def test_a_call_whose_reply_was_lost_is_counted_once(app_config, app, make_account, pair, failover):
    """gate.lua ran (and counted the call) but its reply never came: the outage mode admits the
    call, and counts it only where the server then answering lacks it. `none`: the primary is
    still there; `after-replication`: the replica had it when promoted; `before-replication`: the
    replica was promoted first and never got it."""
    primary, replica, proxy = pair
    cx = create_app(app_config | CHEAP_HASHING | {"LIMITS_REDIS_URL": proxy.url})
    failing_over = cx.app
    gate = failing_over.extensions["levqor.gate"]
    account_id, key = make_account(tier="pro")
    old, new = redis.Redis(port=primary.port), redis.Redis(port=replica.port)
    usage = metering.usage_key(account_id, metering.calendar_period(datetime.now(UTC)).id)
    statuses = []
    with cx.test_client() as client:

        def calls(n: int) -> None:
            statuses.extend(client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code for _ in range(n))

        calls(5)
        if failover == "before-replication":
            new.replicaof("NO", "ONE")
        proxy.lose_next_reply()
        calls(1)  # counted by the primary, admitted by the outage mode
        assert [call.counter.account_id for call in gate.outage.uncertain] == [account_id]
        assert int(old.get(usage)) == 6
        if failover != "none":
            if failover == "after-replication":
                assert old.execute_command("WAIT", 1, 2000) == 1  # the replica has all 6
                new.replicaof("NO", "ONE")
            proxy.switch_to(replica.port)
            old.replicaof("127.0.0.1", replica.port)
            assert wait_for(lambda: _linked(old), 10)
        calls(3)  # the first hands the uncertain call back: counted only if the server lacks it
        assert not gate.outage.waiting
    assert statuses == [200] * 9
    serving = old if failover == "none" else new
    assert int(serving.get(usage)) == 9
    gate.flusher.tick()
    with failing_over.app_context():
        metering.flush_usage(failing_over.extensions["levqor.limits_redis"])  # the proxy: to `serving`
        persisted = db.session.scalar(sa.select(UsageDaily.calls).where(UsageDaily.account_id == account_id))
    assert persisted == 9
    failing_over.extensions["levqor.request_log"].clear()


def test_a_call_whose_reply_came_after_the_timeout_is_counted_once(app_config, app, make_account, pair):
    """A slow reply (the connection stays up): the client gives up after its timeout, the outage
    mode admits the call, and the server, which counted it, is found holding it."""
    primary, _, proxy = pair
    cx = create_app(app_config | CHEAP_HASHING | {"LIMITS_REDIS_URL": proxy.url})
    late_reply = cx.app
    gate = late_reply.extensions["levqor.gate"]
    account_id, key = make_account(tier="pro")
    usage = metering.usage_key(account_id, metering.calendar_period(datetime.now(UTC)).id)
    with cx.test_client() as client:

        def calls(n: int) -> list[int]:
            return [client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code for _ in range(n)]

        statuses = calls(2)
        proxy.lose_next_reply(close=False)
        statuses += calls(1)
        assert len(gate.outage.uncertain) == 1
        statuses += calls(2)
    assert statuses == [200] * 5 and not gate.outage.waiting
    assert int(redis.Redis(port=primary.port).get(usage)) == 5
    late_reply.extensions["levqor.request_log"].clear()


def test_a_portal_sandbox_call_whose_reply_was_lost_is_not_sent_again(app_config, app, make_account, pair):
    """The portal's door runs gate.lua with redis-py, which would send a command again on a new
    connection after a lost reply (running the script twice): it sends it once, and the outage
    mode's recount finds the call counted."""
    primary, _, proxy = pair
    cx = create_app(app_config | CHEAP_HASHING | {"LIMITS_REDIS_URL": proxy.url})
    lost_reply = cx.app
    gate = lost_reply.extensions["levqor.gate"]
    _, key = make_account(tier="pro")
    with lost_reply.app_context():
        admitted = [gate.authorize_hash(keyfmt.hash_key(key), "sandbox") for _ in range(2)]
        proxy.lose_next_reply()
        admitted.append(gate.authorize_hash(keyfmt.hash_key(key), "sandbox"))  # the outage mode's
        assert len(gate.outage.uncertain) == 1
        admitted.append(gate.authorize_hash(keyfmt.hash_key(key), "sandbox"))  # hands it back
    assert not gate.outage.waiting
    caller = admitted[0]["account_id"], admitted[0]["key_id"]
    sandbox_calls = redis.Redis(port=primary.port).get(metering.sandbox_key(*caller, datetime.now(UTC).date()))
    assert int(sandbox_calls) == 4
    lost_reply.extensions["levqor.request_log"].clear()


def test_a_lost_reply_call_is_recounted_once_however_often_it_is_asked(redis_server):
    """The recount notes the call's id as gate.lua would: a recount whose own reply was lost, asked
    again, finds the call counted."""
    r = redis.Redis.from_url(redis_server.url)
    account_id, day = 900_000 + secrets.randbelow(10**6), datetime.now(UTC).date()
    asked = [
        metering.count_unless_held(r, "rk", account_id, "2026-12", day, area, call_id)
        for area, call_id in (("v1", "id-a"), ("v1", "id-a"), ("v1", "id-b"), ("sandbox", "id-c"), ("sandbox", "id-c"))
    ]
    assert [(a.held, a.day_count) for a in asked] == [(False, 1), (True, 1), (False, 2), (False, 1), (True, 1)]
    assert int(r.get(metering.usage_key(account_id, "2026-12"))) == 2
    assert int(r.get(metering.daily_key(account_id, "rk", day))) == 2
    assert int(r.get(metering.sandbox_key(account_id, "rk", day))) == 1
    assert r.smembers(metering.dirty_key(account_id)) == {f"rk|{account_id}|{day.isoformat()}".encode()}
