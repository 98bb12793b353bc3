"""A Redis outage mid-run: valid keys keep being served, and the meter catches up afterwards."""

import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest
import redis as redis_py
import sqlalchemy as sa

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.apijobs.models import Job
from levqor_core.extensions import db
from levqor_core.keys import format as key_format
from levqor_core.metering import counters as metering
from levqor_core.metering import flusher as flusher_module
from levqor_core.metering.models import UsageDaily
from levqor_core.web.limiter import limiter

from .helpers import RATE_HEADERS, ROOT, seed_usage, shipped_env
from .servers import free_port


def test_redis_stopped_mid_run_then_restarted(cx, app, make_account, redis_server, outage):
    _, key = make_account(tier="pro")
    headers = {"x-api-key": key}
    with cx.test_client() as client:
        for _ in range(5):
            assert client.get("/api/v1/workflows", headers=headers).status_code == 200
        with app.app_context():
            metering.flush_usage(app.extensions["levqor.redis"])

        outage()
        during = [client.get("/api/v1/workflows", headers=headers) for _ in range(3)]
        assert [r.status_code for r in during] == [200, 200, 200]
        assert during[-1].headers["X-RateLimit-Limit"] == "10000"
        assert int(during[-1].headers["X-RateLimit-Remaining"]) == 10000 - 5 - 3
        created = client.post("/api/v1/jobs", headers=headers, json={"workflow": "echo", "input": {"a": 1}})
        assert created.status_code == 202  # persisted; queued for the worker when Redis is back
        assert client.get("/api/sandbox/v1/workflows", headers=headers).status_code == 200
        unknown = key_format.generate()
        assert client.get("/api/v1/workflows", headers={"x-api-key": unknown}).status_code == 401
        usage = client.get("/api/usage", headers=headers)
        assert usage.status_code == 200 and usage.json()["calls_used"] == 5 + 4
        assert usage.json()["estimated"] is True
        sandbox_job = client.post("/api/sandbox/v1/jobs", headers=headers, json={"workflow": "echo", "input": {}})
        assert sandbox_job.status_code == 503
        assert sandbox_job.json()["type"].endswith("/service-unavailable")

        redis_server.start()  # empty: no persistence, as after a real crash
        for _ in range(2):
            assert client.get("/api/v1/workflows", headers=headers).status_code == 200
        usage = client.get("/api/usage", headers=headers).json()
        # 5 before, 4 during (3 + the job), 2 after: nothing lost, nothing counted twice.
        assert usage["calls_used"] == 11 and usage["estimated"] is False
        assert usage["sandbox"]["calls_today"] == 2  # workflows during the outage + the refused-later job call
    with app.app_context():
        job = db.session.scalar(sa.select(Job))
        assert job.status == "queued"


def test_revocation_during_outage_is_enforced_from_the_database(cx, app, portal, outage):
    dev = portal().sign_up()
    raw = dev.new_key().json()["key"]
    with cx.test_client() as client:
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
        outage()
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
        revoked = dev.client.delete("/api/key", headers={"X-CSRFToken": dev.csrf})
        assert revoked.status_code == 200
        # This process forgets the key at once; another process within DEGRADED_CACHE_SECONDS.
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 401


def test_refusals_during_an_outage_name_the_limit_that_refused(cx, app, make_account, outage):
    _, key = make_account(tier="sandbox")
    spent_id, spent = make_account(tier="sandbox")
    seed_usage(app, spent_id, calls=tiers.get("sandbox").monthly_quota)
    with cx.test_client() as client:
        outage()
        quota = client.get("/api/v1/workflows", headers={"x-api-key": spent})
        assert quota.status_code == 429 and quota.json()["type"].endswith("/monthly-quota-exceeded")
        assert quota.headers["X-RateLimit-Limit"] == "1000" and quota.headers["X-RateLimit-Remaining"] == "0"
        assert quota.headers["RateLimit"].startswith('"monthly";r=0;')
        assert all(h in quota.headers for h in RATE_HEADERS + ("Retry-After",))

        for _ in range(60):
            burst = client.get("/api/usage", headers={"x-api-key": key})
            if burst.status_code == 429:
                break
        assert burst.json()["type"].endswith("/burst-limit-exceeded")
        assert burst.headers["X-RateLimit-Limit"] == str(tiers.get("sandbox").burst_per_second)
        assert burst.headers["RateLimit-Policy"] == f'"burst";q={tiers.get("sandbox").burst_per_second};w=1'
        assert burst.headers["RateLimit"] == '"burst";r=0;t=1' and burst.headers["Retry-After"] == "1"


def test_an_idle_process_hands_its_outage_calls_to_redis_on_its_next_tick(cx, app, make_account, redis_server, outage):
    account_id, key = make_account(tier="pro")
    gate = app.extensions["levqor.gate"]
    with cx.test_client() as client:
        outage()
        for _ in range(3):
            assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
        gate.flusher.tick()  # Redis still down: the calls stay pending, nothing raises
        redis_server.start()
        gate.flusher.tick()  # no API call since: the tick alone replays and persists them
    r = app.extensions["levqor.redis"]
    with app.app_context():
        period = metering.current_period(db.session.get(Account, account_id), datetime.now(UTC))
        assert int(r.get(metering.usage_key(account_id, period))) == 3
        assert db.session.scalar(sa.select(sa.func.sum(UsageDaily.calls))) == 3


def test_a_process_stopped_mid_outage_waits_for_redis_to_hand_over_the_calls_only_it_has(
    cx, app, make_account, redis_server, outage
):
    """A web dyno SIGTERMed while its Redis (a cluster's shard) fails over: the calls counted by the
    lost server and not yet flushed (journaled) and those served meanwhile (outage mode) exist only
    in this process. Its last tick waits for Redis instead of dropping them (seen in `make
    bench-scale` when a dyno restart fell inside a failover)."""
    account_id, key = make_account(tier="pro")
    gate = app.extensions["levqor.gate"]
    with cx.test_client() as client:
        for _ in range(2):  # counted by Redis, not flushed: gone with it (no persistence)
            assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
        outage()
        for _ in range(3):  # served from the database
            assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    assert gate.outage.pending  # the calls served meanwhile, held in this process
    back = threading.Timer(1.5, redis_server.start)  # the replica promoted while the process stops
    back.start()
    try:
        gate.flusher.thread.tick_at_exit()
    finally:
        back.join()
    assert not gate.flusher.holding()
    with app.app_context():
        metering.flush_usage(app.extensions["levqor.redis"])  # another process's next flush
        assert (
            db.session.scalar(sa.select(sa.func.sum(UsageDaily.calls)).where(UsageDaily.account_id == account_id)) == 5
        )


def test_a_process_stopped_while_redis_stays_down_gives_up_after_a_bound(
    app, make_account, cx, outage, monkeypatch, caplog
):
    _, key = make_account(tier="pro")
    with cx.test_client() as client:
        outage()
        assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    monkeypatch.setattr(flusher_module, "EXIT_WAIT_SECONDS", 1)
    gate = app.extensions["levqor.gate"]
    gate.flusher.thread.tick_at_exit()  # returns: the platform's SIGKILL must not be what ends it
    assert gate.flusher.holding()
    assert "exiting with calls redis has not had" in caplog.text


@pytest.fixture
def redis_full(app):
    """Redis at its maxmemory with noeviction: every write is refused with an OOM error."""
    r = app.extensions["levqor.redis"]
    r.config_set("maxmemory-policy", "noeviction")

    def fill():
        # Past maxmemory, as after a burst of writes: with noeviction every write is refused.
        r.config_set("maxmemory", 1)
        with pytest.raises(redis_py.exceptions.OutOfMemoryError):
            r.set("filler", "x")

    yield fill
    r.config_set("maxmemory", 0)
    r.flushdb()
    limiter._storage_dead = False


def test_a_full_redis_is_served_like_an_outage_and_nothing_is_a_500(cx, app, make_account, portal, redis_full):
    _, key = make_account(tier="pro")
    headers = {"x-api-key": key}
    signed_in = portal().sign_up()
    with cx.test_client() as client:
        assert client.get("/api/v1/workflows", headers=headers).status_code == 200  # cached, counted
        redis_full()
        calls = {
            "read": client.get("/api/v1/workflows", headers=headers),
            "job": client.post("/api/v1/jobs", headers=headers, json={"workflow": "echo", "input": {"a": 1}}),
            "list": client.get("/api/v1/jobs", headers=headers),
            "usage": client.get("/api/usage", headers=headers),
            "sandbox job": client.post("/api/sandbox/v1/jobs", headers=headers, json={"workflow": "echo", "input": {}}),
            "unknown key": client.get("/api/v1/workflows", headers={"x-api-key": key_format.generate()}),
        }
    calls["portal"] = signed_in.client.get("/developer")
    calls["portal usage"] = signed_in.client.get("/api/usage")
    statuses = {name: response.status_code for name, response in calls.items()}
    assert statuses == {
        "read": 200,
        "job": 202,  # persisted; the worker gets it from requeue-jobs once Redis has room
        "list": 200,
        "usage": 200,
        "sandbox job": 503,  # Redis is the sandbox's only store
        "unknown key": 401,
        "portal": 200,
        "portal usage": 200,
    }, {name: r.text[:300] for name, r in calls.items() if r.status_code >= 500}
    assert calls["sandbox job"].json()["type"].endswith("/service-unavailable")


def test_calls_no_flush_had_persisted_survive_a_redis_restart(cx, app, make_account, redis_server, outage):
    account_id, key = make_account(tier="pro")
    headers = {"x-api-key": key}
    r, gate = app.extensions["levqor.redis"], app.extensions["levqor.gate"]
    with cx.test_client() as client:
        for _ in range(5):
            assert client.get("/api/v1/workflows", headers=headers).status_code == 200
        with app.app_context():
            metering.flush_usage(r)  # 5 persisted
        for _ in range(4):
            assert client.get("/api/v1/workflows", headers=headers).status_code == 200
        for _ in range(2):
            assert client.get("/api/sandbox/v1/workflows", headers=headers).status_code == 200

        outage()  # the 4 + 2 calls since the flush exist only in this Redis, which is lost
        redis_server.start()
        gate.flusher.tick()  # replays them from this process's journal, then flushes
        gate.flusher.tick()  # a second tick finds nothing more to replay
        usage = client.get("/api/usage", headers=headers).json()
    assert usage["calls_used"] == 5 + 4 and usage["sandbox"]["calls_today"] == 2  # /api/usage is not metered
    with app.app_context():
        metering.flush_usage(r)
        row = db.session.scalar(sa.select(UsageDaily))
        assert (row.calls, row.sandbox_calls) == (9, 2)
        period = metering.current_period(db.session.get(Account, account_id), datetime.now(UTC))
        assert int(r.get(metering.usage_key(account_id, period))) == 9


def test_outage_calls_handed_back_first_leave_the_journal_its_calls_to_replay(
    cx, app, make_account, redis_server, outage
):
    """`make soak` (Redis restarted empty under load) lost 3-5 calls on most keys: a request for one
    key handed the new life another key's outage calls before any call of that key in that life had
    noted what the life found (its day base). The base then counted the outage's calls as found, and
    as many of the journaled calls (counted by the lost life, not flushed) were never replayed."""
    _, key_one = make_account(tier="pro")
    account_two, key_two = make_account(tier="pro")
    r, gate = app.extensions["levqor.redis"], app.extensions["levqor.gate"]
    with cx.test_client() as client:
        for key in (key_one, key_two):
            for _ in range(5):
                assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
        with app.app_context():
            metering.flush_usage(r)  # 5 each persisted
        for _ in range(4):  # counted by the Redis about to be lost, journaled, not flushed
            assert client.get("/api/v1/workflows", headers={"x-api-key": key_two}).status_code == 200
        outage()
        for _ in range(3):  # served from the database, pending in this process
            assert client.get("/api/v1/workflows", headers={"x-api-key": key_two}).status_code == 200
        redis_server.start()  # empty
        # Another key's call reaches the new life first; it hands over the outage's calls.
        assert client.get("/api/v1/workflows", headers={"x-api-key": key_one}).status_code == 200
        assert not gate.outage.waiting
        gate.flusher.tick()  # replays the journal, then flushes
        gate.flusher.tick()
        usage = client.get("/api/usage", headers={"x-api-key": key_two}).json()
    assert usage["calls_used"] == 5 + 4 + 3
    with app.app_context():
        metering.flush_usage(r)
        persisted = db.session.scalar(
            sa.select(sa.func.sum(UsageDaily.calls)).where(UsageDaily.account_id == account_two)
        )
        assert persisted == 5 + 4 + 3


# A web process that admits calls, sees Redis come back empty and exits before its flusher's next
# tick (a deploy, gunicorn's max-requests): its last tick, at exit, replays what only it remembers.
_EXITS_AFTER_REDIS_LOST = """
import os, redis
from levqor_core.app import create_app
from levqor_core.metering import counters as metering
from levqor_core.metering import flusher as flusher_module
cx = create_app({"USAGE_FLUSH_SECONDS": 3600})  # the flusher's thread runs, its tick never comes
headers = {"x-api-key": os.environ["LEVQOR_TEST_KEY"]}
with cx.test_client() as client:
    for _ in range(5):
        assert client.get("/api/v1/workflows", headers=headers).status_code == 200
    with cx.app.app_context():
        metering.flush_usage(cx.app.extensions["levqor.redis"])  # 5 persisted
    for _ in range(4):
        assert client.get("/api/v1/workflows", headers=headers).status_code == 200
redis.Redis.from_url(os.environ["REDIS_URL"]).flushall()  # Redis restarted empty: the 4 are gone
"""


def test_a_process_that_exits_before_its_next_flush_replays_its_journal_at_exit(
    app, make_account, redis_server, database_url, tmp_path
):
    account_id, key = make_account(tier="pro")
    env = shipped_env(database_url, redis_server.url, free_port(), tmp_path) | {"LEVQOR_TEST_KEY": key}
    ran = subprocess.run(
        [sys.executable, "-c", _EXITS_AFTER_REDIS_LOST], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    r = app.extensions["levqor.redis"]
    with app.app_context():
        period = metering.current_period(db.session.get(Account, account_id), datetime.now(UTC))
        assert int(r.get(metering.usage_key(account_id, period)) or 0) == 5 + 4
