"""Sandbox mirror, usage counters and the numbers GET /api/usage reports."""

import json
import time
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import sqlalchemy as sa

from levqor_core.accounts.models import Account
from levqor_core.apijobs import sandbox
from levqor_core.apijobs.models import Job
from levqor_core.extensions import db
from levqor_core.limits import key_cache
from levqor_core.metering import card as usage_card
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily

from . import both_backends
from .helpers import load_spec

cx, app = both_backends.fixtures()  # every test on one Redis and on a Redis Cluster

SPEC = load_spec()


def schema_of(name: str) -> dict:
    """A component schema, with refs resolved against the spec and OpenAPI's nullable mapped."""

    def convert(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return convert(SPEC["components"]["schemas"][node["$ref"].split("/")[-1]])
            out = {k: convert(v) for k, v in node.items() if k not in ("nullable", "example")}
            if node.get("nullable"):
                out = {"anyOf": [out, {"type": "null"}]}
            return out
        if isinstance(node, list):
            return [convert(v) for v in node]
        return node

    return convert(SPEC["components"]["schemas"][name])


@pytest.fixture
def key(make_account):
    return make_account()[1]


def test_sandbox_job_returns_200_family_with_mock_data_valid_against_the_spec(client, key, app):
    created = client.post(
        "/api/sandbox/v1/jobs", headers={"x-api-key": key}, json={"workflow": "echo", "input": {"hello": "world"}}
    )
    assert created.status_code == 202
    job = created.json()
    jsonschema.validate(job, schema_of("Job"))
    assert job["status"] == "succeeded" and job["result"] == {"hello": "world"}
    read = client.get(f"/api/sandbox/v1/jobs/{job['id']}", headers={"x-api-key": key})
    assert read.status_code == 200 and read.json() == job
    listed = client.get("/api/sandbox/v1/jobs", headers={"x-api-key": key}).json()
    jsonschema.validate(listed, schema_of("JobPage"))
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    workflows = client.get("/api/sandbox/v1/workflows", headers={"x-api-key": key})
    assert workflows.status_code == 200
    jsonschema.validate(workflows.json(), schema_of("WorkflowList"))
    with app.app_context():  # production tables untouched
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_sandbox_delay_job_can_be_canceled_and_finished_jobs_cannot(client, key):
    running = client.post(
        "/api/sandbox/v1/jobs", headers={"x-api-key": key}, json={"workflow": "delay", "input": {"seconds": 30}}
    ).json()
    assert running["status"] == "running"
    canceled = client.post(f"/api/sandbox/v1/jobs/{running['id']}/cancel", headers={"x-api-key": key})
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = client.post(f"/api/sandbox/v1/jobs/{running['id']}/cancel", headers={"x-api-key": key})
    assert again.status_code == 409


def test_sandbox_results_are_deterministic(client, key):
    body = {"workflow": "text-stats", "input": {"text": "Alpha beta. Gamma alpha."}}
    first = client.post("/api/sandbox/v1/jobs", headers={"x-api-key": key}, json=body).json()
    second = client.post("/api/sandbox/v1/jobs", headers={"x-api-key": key}, json=body).json()
    assert first["result"] == second["result"] and first["id"] != second["id"]
    assert first["result"]["top_words"][0] == {"word": "alpha", "count": 2}


def test_sandbox_idempotency_and_pagination(client, key):
    headers = {"x-api-key": key, "Idempotency-Key": "k1"}
    a = client.post("/api/sandbox/v1/jobs", headers=headers, json={"workflow": "echo", "input": {"n": 1}})
    b = client.post("/api/sandbox/v1/jobs", headers=headers, json={"workflow": "echo", "input": {"n": 1}})
    assert (a.status_code, b.status_code) == (202, 200) and a.json()["id"] == b.json()["id"]
    c = client.post("/api/sandbox/v1/jobs", headers=headers, json={"workflow": "echo", "input": {"n": 2}})
    assert c.status_code == 409
    for i in range(4):
        client.post("/api/sandbox/v1/jobs", headers={"x-api-key": key}, json={"workflow": "echo", "input": {"i": i}})
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/sandbox/v1/jobs", headers={"x-api-key": key}, params=params).json()
        seen += [j["input"] for j in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert seen == [{"i": 3}, {"i": 2}, {"i": 1}, {"i": 0}, {"n": 1}]


def _walk_sandbox_jobs(client, key: str, limit: int) -> list[str]:
    seen, cursor = [], None
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/sandbox/v1/jobs", headers={"x-api-key": key}, params=params).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            return seen
        cursor = page["next_cursor"]


def test_sandbox_pages_are_exact_when_jobs_share_a_timestamp(client, make_account, app, monkeypatch):
    """Jobs created in the same microsecond are each listed exactly once, in one stable order."""
    account_id, key = make_account()
    r = app.extensions["levqor.limits_redis"]
    tick = float(int(time.time()))
    for frozen in (tick - 1, tick, tick, tick):
        with monkeypatch.context() as clock:
            clock.setattr(sandbox.time, "time", lambda frozen=frozen: frozen)
            sandbox.create_job(r, account_id, "echo", {"at": frozen})
    created = [j["id"] for j in client.get("/api/sandbox/v1/jobs", headers={"x-api-key": key}).json()["data"]]
    assert len(set(created)) == 4
    for limit in (1, 2, 3):
        assert _walk_sandbox_jobs(client, key, limit) == created


def test_sandbox_cursor_from_elsewhere_is_a_400(client, key):
    for cursor in ("not-a-cursor", "ajU", "czAwMDA6am9iXw"):  # junk, a /v1/jobs cursor, a truncated one
        response = client.get("/api/sandbox/v1/jobs", headers={"x-api-key": key}, params={"cursor": cursor})
        assert response.status_code == 400
        assert response.json()["type"].endswith("/invalid-cursor")


def test_usage_counts_v1_and_sandbox_separately_and_not_itself(client, portal):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    for _ in range(3):
        assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    client.get("/api/v1/jobs/job_00000000000000000000", headers={"x-api-key": key})  # a 404 still counts
    for _ in range(2):
        client.get("/api/sandbox/v1/workflows", headers={"x-api-key": key})
    client.get("/api/key", headers={"x-api-key": key})
    for _ in range(3):
        usage = client.get("/api/usage", headers={"x-api-key": key})
    body = usage.json()
    assert body["calls_used"] == 4 and body["quota"] == 1000 and body["remaining"] == 996
    assert body["sandbox"] == {"calls_today": 2, "limit": 100, "resets_at": body["sandbox"]["resets_at"]}
    now = datetime.now(UTC)
    assert body["period_start"] == now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat()
    assert datetime.fromisoformat(body["resets_at"]) > now
    assert dev.client.get("/api/usage").json() == body  # the portal session sees the same numbers


def test_usage_is_persisted_and_survives_a_redis_flush(client, key, app):
    for _ in range(5):
        client.get("/api/v1/workflows", headers={"x-api-key": key})
    client.get("/api/sandbox/v1/workflows", headers={"x-api-key": key})
    r = app.extensions["levqor.limits_redis"]
    with app.app_context():
        assert metering.flush_usage(r) == 1
        row = db.session.scalar(sa.select(UsageDaily))
        assert (row.calls, row.sandbox_calls) == (5, 1)
    r.flushdb()  # a Redis restart without persistence
    after = client.get("/api/usage", headers={"x-api-key": key}).json()
    assert after["calls_used"] == 5 and after["sandbox"]["calls_today"] == 1
    client.get("/api/v1/workflows", headers={"x-api-key": key})
    assert client.get("/api/usage", headers={"x-api-key": key}).json()["calls_used"] == 6


def test_a_subscription_starting_mid_day_does_not_inherit_that_mornings_calls(client, make_account, app):
    account_id, key = make_account()
    for _ in range(4):
        client.get("/api/v1/workflows", headers={"x-api-key": key})
    r = app.extensions["levqor.limits_redis"]
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with app.app_context():
        metering.flush_usage(r)  # the morning's 4 Sandbox calls are in today's row
        account = db.session.get(Account, account_id)
        account.tier = "pro"
        account.period_start = max(midnight + timedelta(seconds=1), now - timedelta(minutes=1))
        account.period_end = account.period_start + timedelta(days=30)
        db.session.commit()
        key_cache.forget_account(account_id)  # as the Stripe webhook does
    client.get("/api/v1/workflows", headers={"x-api-key": key})
    usage = client.get("/api/usage", headers={"x-api-key": key}).json()
    assert usage["tier"] == "pro" and usage["calls_used"] == 1 and usage["remaining"] == 9999


def test_flush_is_idempotent_and_never_moves_counts_backwards(client, key, app):
    client.get("/api/v1/workflows", headers={"x-api-key": key})
    r = app.extensions["levqor.limits_redis"]
    with app.app_context():
        metering.flush_usage(r)
        assert metering.flush_usage(r) == 0
        kid, acct = db.session.execute(sa.select(UsageDaily.key_id, UsageDaily.account_id)).one()
        r.sadd(metering.dirty_key(acct), f"{kid}|{acct}|{datetime.now(UTC).date().isoformat()}")
        r.set(metering.daily_key(acct, kid, datetime.now(UTC).date()), 0)
        metering.flush_usage(r)
        assert db.session.scalar(sa.select(UsageDaily.calls)) == 1


def test_daily_history_covers_30_days_with_todays_live_count(client, key, app):
    client.get("/api/v1/workflows", headers={"x-api-key": key})
    with app.app_context():
        account_id = db.session.scalar(sa.select(UsageDaily.account_id)) or None
        from levqor_core.keys.models import ApiKey

        account_id = db.session.scalar(sa.select(ApiKey.account_id))
        now = datetime.now(UTC)
        held = usage_card.from_database(account_id, now.date())
        history = usage_card.daily_history(app.extensions["levqor.limits_redis"], account_id, held, now)
    assert len(history) == 30 and history[-1]["calls"] == 1 and sum(d["calls"] for d in history) == 1
    assert json.dumps(history)  # plain data for the portal's chart


def test_forgetting_an_account_deletes_all_its_sandbox_jobs_and_only_its(client, make_account, app):
    from levqor_core.apijobs import sandbox

    gone_id, gone_key = make_account(tier="enterprise")
    kept_id, kept_key = make_account(tier="enterprise")
    for key in (gone_key, gone_key, kept_key):
        made = client.post("/api/sandbox/v1/jobs", headers={"x-api-key": key}, json={"workflow": "echo", "input": {}})
        assert made.status_code == 202
    r = app.extensions["levqor.limits_redis"]
    # More jobs than are kept, each with an idempotency key: every name is known without a SCAN.
    with app.app_context():
        for n in range(sandbox.MAX_JOBS + 20):
            sandbox.create_job(r, gone_id, "echo", {"n": n}, idempotency_key=f"idem-{n}")
    sandbox.forget_account(r, gone_id)
    assert list(r.scan_iter(f"{sandbox.key_prefix(gone_id)}:*")) == []
    assert list(r.scan_iter(f"{sandbox.key_prefix(kept_id)}:*"))
    assert client.get("/api/sandbox/v1/jobs", headers={"x-api-key": gone_key}).json()["data"] == []
    assert len(client.get("/api/sandbox/v1/jobs", headers={"x-api-key": kept_key}).json()["data"]) == 1
