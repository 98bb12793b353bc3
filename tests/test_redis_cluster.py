"""The API's path on a real Redis Cluster when a primary dies: its replica is promoted, the gate
serves the gap from the database, and every admitted call is counted once afterwards (the journal
replays what the replica never got, the outage mode what it admitted meanwhile, a call whose reply
the dying primary never sent only if the replica lacks it)."""

import threading
import time

import pytest
import sqlalchemy as sa
from redis.crc import key_slot

from levqor_core import redis_scripts
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily

from .helpers import run_on_own_loop
from .servers import wait_for


@pytest.fixture
def app(cluster_cx):
    return cluster_cx.app  # the app the suite's fixtures (make_account, the clean state) act on


def _call_until(cx, key: str, stop: threading.Event, statuses: list) -> None:
    with cx.test_client() as client:  # one event loop per thread, as a server process has
        while not stop.is_set():
            statuses.append(client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code)
            time.sleep(0.01)


def test_a_primary_killed_mid_run_costs_no_5xx_and_loses_no_call(app, cluster_cx, make_account, redis_cluster):
    cx = cluster_cx
    account_id, key = make_account(tier="enterprise")
    bucket_key = metering.usage_key(account_id, "any")
    killed = redis_cluster.primary_of(bucket_key)
    assert cx.test_client().get("/api/health").status_code == 200  # Connexion's stack, built once
    stop, statuses = threading.Event(), []
    callers = [threading.Thread(target=_call_until, args=(cx, key, stop, statuses)) for _ in range(3)]
    for caller in callers:
        caller.start()
    try:
        wait_for(lambda: len(statuses) > 60, timeout=30, step=0.05)
        redis_cluster.kill(killed)  # SIGKILL: what it had not yet sent its replica is gone
        promoted = wait_for(lambda: redis_cluster.serving(bucket_key), timeout=30, step=0.1)
        assert promoted and promoted != killed, "no replica was promoted"
        served = len(statuses)
        assert wait_for(lambda: len(statuses) > served + 60, timeout=30, step=0.05)  # on the promoted one
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
        redis_cluster.restart(killed)  # it rejoins as a replica: the next tests see a whole cluster
    assert statuses and not [s for s in statuses if s >= 500]
    admitted = statuses.count(200)
    gate, r = app.extensions["levqor.gate"], app.extensions["levqor.limits_redis"]
    for _ in range(2):  # hand Redis the calls served without it, replay what the dead primary took
        gate.flusher.tick()
    with app.app_context():
        metering.flush_usage(r)
        total = sa.select(sa.func.sum(UsageDaily.calls)).where(UsageDaily.account_id == account_id)
        persisted = db.session.scalar(total)
    # Every admitted call is counted once: one whose script the primary ran just before it died,
    # but whose reply never came, was admitted by the outage mode with its id, and counted again
    # only if the promoted replica lacked it.
    assert not gate.outage.waiting
    assert persisted == admitted
    assert wait_for(redis_cluster.healthy, timeout=30)


def test_the_script_client_follows_moved_and_ask_once(redis_cluster):
    """A stale slot map (MOVED) and a slot mid-migration (ASK) reach the right primary."""
    key = "lvq:{test-redirect}:k"
    slot = key_slot(key.encode())
    owner = redis_cluster.primary_of(key)
    other = next(port for port in redis_cluster.primaries() if port != owner)
    client = redis_scripts.ClusterScriptClient(redis_cluster.url)
    script = client.register_script("return redis.call('INCR', KEYS[1])")

    async def moved_then_ask():
        await client.refresh()
        client.slots[slot] = ("127.0.0.1", other)  # stale: that node answers MOVED
        moved = await script([key])
        ids = {port: redis_cluster.cli(port, "CLUSTER", "MYID").strip() for port in (owner, other)}
        redis_cluster.cli(other, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[owner])
        redis_cluster.cli(owner, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[other])
        try:
            asked = await script([key + ":new"])  # not on the owner: it answers ASK for the other
        finally:
            for port in (owner, other):
                redis_cluster.cli(port, "CLUSTER", "SETSLOT", str(slot), "STABLE")
        return moved, asked

    moved, asked = run_on_own_loop(moved_then_ask())
    assert (moved, asked) == (1, 1)  # each script ran once, where the cluster sent it
    for port in (owner, other):
        redis_cluster.cli(port, "DEL", key, key + ":new")
    assert wait_for(redis_cluster.healthy, timeout=30)
