"""API keys: format, one-time secret, rotation with grace, revocation, audit, concurrency."""

import logging
import runpy
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import format as key_format
from levqor_core.keys import service as keys
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.limits import key_cache, tiers
from levqor_core.metering import counters as metering

ROOT = Path(__file__).resolve().parent.parent


def test_key_format_has_prefix_uuid_hex_and_checksum():
    raw = key_format.generate()
    assert key_format.KEY_RE.match(raw)
    assert key_format.is_well_formed(raw)
    hex_part = raw[4:36]
    assert int(hex_part[12], 16) == 4  # a UUID4
    typo = raw[:10] + ("0" if raw[10] != "0" else "1") + raw[11:]
    assert not key_format.is_well_formed(typo)


def test_create_key_returns_secret_once_and_stores_only_a_hash(portal, app):
    dev = portal().sign_up()
    response = dev.new_key()
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "key", "hint", "tier", "created_at"}
    assert body["tier"] == "sandbox"
    raw = body["key"]
    assert key_format.is_well_formed(raw)
    assert body["hint"].startswith(raw[:8]) and body["hint"].endswith(raw[-4:])

    shown = dev.client.get("/api/key")
    assert shown.status_code == 200
    assert raw not in shown.text and shown.json()["hint"] == body["hint"]
    with app.app_context():
        stored = db.session.scalar(sa.select(ApiKey))
        assert stored.key_hash == key_format.hash_key(raw)
        dump = " ".join(str(v) for row in db.session.execute(sa.text("SELECT * FROM api_keys")) for v in row)
        assert raw not in dump


def test_new_key_needs_portal_session_and_csrf(client, portal):
    assert client.post("/api/key/new", json={}).status_code == 401  # no session: refused before any CSRF check
    dev = portal().sign_up()
    refused = dev.client.post("/api/key/new", json={})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/csrf-failed")


def test_second_key_the_same_day_is_refused_with_retry_after(portal):
    dev = portal().sign_up()
    assert dev.new_key().status_code == 201
    again = dev.new_key()
    assert again.status_code == 429
    assert again.json()["type"].endswith("/key-creation-limited")
    assert 0 < int(again.headers["Retry-After"]) <= 86400
    assert again.headers["X-RateLimit-Limit"] == str(tiers.KEY_CREATIONS_PER_DAY)
    assert again.headers["X-RateLimit-Remaining"] == "0"


def test_a_key_cannot_spend_its_owners_daily_key_creation(portal, client, app):
    """A leaked key must not be able to stop its owner from rolling it."""
    owner = portal().sign_up()
    with app.app_context():
        account = db.session.scalar(sa.select(Account).where(Account.email == owner.email))
        leaked = keys.issue(account, keys.Actor(email="test")).raw  # issued without the portal's limit
    for _ in range(3):
        refused = client.post("/api/key/new", headers={"x-api-key": leaked}, json={})
        assert refused.status_code == 401, refused.text
    rolled = owner.new_key()
    assert rolled.status_code == 201, rolled.text
    assert client.get("/api/v1/workflows", headers={"x-api-key": leaked}).status_code == 401


def test_concurrent_creations_make_exactly_one_active_key(portal, app):
    dev = portal().sign_up()
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: dev.new_key().status_code, range(20)))
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {201, 429}
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiKey).where(ApiKey.status == "active")) == 1


def test_database_enforces_one_active_key_per_account(app, make_account):
    account_id, _ = make_account()
    with app.app_context():
        db.session.add(ApiKey(id="key_dup", account_id=account_id, key_hash="0" * 64, hint="x", status="active"))
        try:
            db.session.commit()
            raised = False
        except sa.exc.IntegrityError:
            db.session.rollback()
            raised = True
    assert raised


def test_rotation_stops_old_key_at_once_by_default(client, app, make_account):
    account_id, old = make_account()
    assert client.get("/api/v1/workflows", headers={"x-api-key": old}).status_code == 200
    with app.app_context():
        account = db.session.get(Account, account_id)
        new = keys.issue(account, keys.Actor(email="t")).raw
    assert client.get("/api/v1/workflows", headers={"x-api-key": old}).status_code == 401
    assert client.get("/api/v1/workflows", headers={"x-api-key": new}).status_code == 200


def test_rotation_with_grace_keeps_old_key_as_expiring(client, app, make_account):
    account_id, old = make_account()
    with app.app_context():
        account = db.session.get(Account, account_id)
        new = keys.issue(account, keys.Actor(email="t"), grace=timedelta(hours=1)).raw
    assert client.get("/api/v1/workflows", headers={"x-api-key": old}).status_code == 200
    listed = client.get("/api/key", headers={"x-api-key": new}).json()
    assert [k["status"] for k in listed["expiring"]] == ["expiring"]


def test_grace_period_ends_and_old_key_stops(client, app, make_account):
    account_id, old = make_account()
    gate = app.extensions["levqor.gate"]
    with app.app_context():
        account = db.session.get(Account, account_id)
        keys.issue(account, keys.Actor(email="t"), grace=timedelta(seconds=60))

    assert gate.authorize_hash(key_format.hash_key(old), "meta")["account_id"] == account_id
    with pytest.raises(problems.InvalidApiKey):
        gate.authorize_hash(key_format.hash_key(old), "meta", now=time.time() + 61)


def test_the_audit_trail_shows_a_grace_period_ending_when_it_ended(client, app, make_account):
    account_id, _ = make_account()
    with app.app_context():
        account = db.session.get(Account, account_id)
        new = keys.issue(account, keys.Actor(email="t"), grace=timedelta(seconds=60)).raw
        expiring = db.session.scalar(sa.select(ApiKey).where(ApiKey.status == "expiring"))
        ended_at = utcnow() - timedelta(minutes=5)  # the grace period ran out a while ago
        expiring.expires_at = ended_at
        db.session.commit()
        old_id = expiring.id
    events = client.get("/api/key/events", headers={"x-api-key": new}).json()["data"]
    expired = [e for e in events if e["event"] == "expired"]
    assert len(expired) == 1 and expired[0]["key_id"] == old_id
    assert datetime.fromisoformat(expired[0]["at"]) == ended_at


def test_revoke_takes_effect_at_once_and_is_audited(portal, client):
    dev = portal().sign_up()
    raw = dev.new_key().json()["key"]
    assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
    revoked = dev.client.delete("/api/key", headers={"X-CSRFToken": dev.csrf})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    after = client.get("/api/v1/workflows", headers={"x-api-key": raw})
    assert after.status_code == 401 and after.json()["type"].endswith("/invalid-api-key")
    events = dev.client.get("/api/key/events").json()["data"]
    assert [e["event"] for e in events] == ["revoked", "created"]
    assert events[0]["actor"] == dev.email and events[0]["ip"]


def test_audit_trail_records_roll(app, make_account):
    account_id, _ = make_account()
    with app.app_context():
        account = db.session.get(Account, account_id)
        keys.issue(account, keys.Actor(email="ops@example.com", ip="10.0.0.1", user_agent="ua"))
        kinds = db.session.scalars(sa.select(KeyEvent.event).order_by(KeyEvent.id)).all()
    assert kinds == ["created", "rolled"]


def test_one_account_cannot_see_another_accounts_key(portal):
    alice, bob = portal().sign_up(), portal().sign_up()
    alice_key = alice.new_key().json()
    bob.new_key()
    seen_by_bob = bob.client.get("/api/key").json()
    assert seen_by_bob["id"] != alice_key["id"]


def test_a_bogus_api_key_header_does_not_switch_off_csrf(portal):
    dev = portal().sign_up()
    dev.new_key()
    forged = dev.client.delete("/api/key", headers={"x-api-key": "lvq_not-a-key"})
    assert forged.status_code == 403 and forged.json()["type"].endswith("/csrf-failed")
    assert dev.client.get("/api/key").json()["status"] == "active"


def test_raw_key_never_reaches_logs_tables_or_later_responses(portal, client, app, caplog):
    caplog.set_level(logging.DEBUG)
    dev = portal().sign_up()
    created = dev.new_key()
    raw = created.json()["key"]
    assert created.headers["Cache-Control"] == "no-store"
    later = [
        client.get("/api/v1/workflows", headers={"x-api-key": raw}),
        client.post("/api/v1/jobs", headers={"x-api-key": raw}, json={"workflow": "echo", "input": {"k": 1}}),
        client.get("/api/usage", headers={"x-api-key": raw}),
        client.get("/api/key", headers={"x-api-key": raw}),
        client.get("/api/key/events", headers={"x-api-key": raw}),
        dev.client.get("/developer/api-keys"),
        dev.client.get("/docs/sdk"),
    ]
    dev.client.delete("/api/key", headers={"X-CSRFToken": dev.csrf})
    later.append(client.get("/api/v1/workflows", headers={"x-api-key": raw}))  # a refused, revoked key
    with app.app_context():
        metering.flush_usage(app.extensions["levqor.redis"])
        for table in db.metadata.sorted_tables:
            dump = " ".join(str(v) for row in db.session.execute(sa.select(table)) for v in row)
            assert raw not in dump and raw[4:36] not in dump, table.name
    for response in later:
        assert raw not in response.text and raw[4:36] not in response.text
    assert caplog.records and raw not in caplog.text and raw[4:36] not in caplog.text
    redis_dump = " ".join(k.decode() for k in app.extensions["levqor.redis"].keys("*"))
    assert raw not in redis_dump and raw[4:36] not in redis_dump


def test_the_audit_trail_records_the_address_the_router_saw_not_one_the_client_wrote(make_account, cx, app):
    """gunicorn.conf.py's trusted proxies, through the same uvicorn middleware gunicorn's worker adds."""
    trusted = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["forwarded_allow_ips"]
    behind_router = TestClient(ProxyHeadersMiddleware(cx, trusted_hosts=trusted), client=("10.12.0.7", 40000))
    account_id, raw = make_account()
    spoofed = {"x-api-key": raw, "X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
    assert behind_router.delete("/api/key", headers=spoofed).status_code == 200
    with app.app_context():
        revoked = db.session.scalars(sa.select(KeyEvent).where(KeyEvent.event == "revoked")).one()
    assert revoked.ip == "203.0.113.9"

    # A client connecting straight to the dyno's port is not a proxy: its header is ignored.
    direct = TestClient(ProxyHeadersMiddleware(cx, trusted_hosts=trusted), client=("198.51.100.4", 40000))
    _, other = make_account()
    assert direct.delete("/api/key", headers={"x-api-key": other, "X-Forwarded-For": "6.6.6.6"}).status_code == 200
    with app.app_context():
        ips = set(db.session.scalars(sa.select(KeyEvent.ip).where(KeyEvent.event == "revoked")).all())
    assert ips == {"203.0.113.9", "198.51.100.4"}


@contextmanager
def after_each_gate_read(app, action):
    """Runs `action` right after each of the gate's key-record SELECTs, before its cache write
    (from the database driver's own event); yields the list of reads seen."""
    reads = []

    def hook(conn, cursor, statement, *_):
        if "FROM api_keys JOIN accounts" in statement:
            reads.append(statement)
            action(len(reads))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "after_cursor_execute", hook)
    try:
        yield reads
    finally:
        sa.event.remove(engine, "after_cursor_execute", hook)


def test_a_revocation_landing_while_the_gate_caches_the_key_still_takes_effect(app, client, make_account):
    """The revoker commits and drops the cached record between the gate's database read and its
    cache write."""
    account_id, raw = make_account()

    def revoke_once(read_number):
        if read_number == 1:
            with app.app_context():  # another session and connection: the revoker's request
                keys.revoke(db.session.get(Account, account_id), keys.Actor(email="test"))

    with after_each_gate_read(app, revoke_once) as reads:
        first = client.get("/api/v1/workflows", headers={"x-api-key": raw})
    assert reads, "the gate's cache fill did not run"
    assert first.status_code == 401
    assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 401


def test_a_valid_key_is_admitted_even_if_every_cache_fill_races_a_change(app, client, make_account):
    """Tier changes keep landing mid-fill (a forget after every gate read): the key stays valid."""
    _, raw = make_account()
    forget = app.extensions["levqor.gate"].records.forget
    with after_each_gate_read(app, lambda _: forget([key_format.hash_key(raw)])) as reads:
        response = client.get("/api/v1/workflows", headers={"x-api-key": raw})
    assert len(reads) == key_cache.FILL_ATTEMPTS
    assert response.status_code == 200, response.text
