"""API keys: format, one-time secret, rotation with grace, revocation, audit, concurrency."""

import html
import logging
import re
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

from levqor_core import problems, tiers
from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import format as key_format
from levqor_core.keys import service as keys
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.limits import key_cache
from levqor_core.metering import counters as metering
from levqor_core.web import key_creation_limit as creation_limit

from .conftest import PASSWORD, csrf_from
from .helpers import age_log_in, enrol_authenticator, fresh_code, recovery_codes

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
    account_id, raw = make_account()
    forget = app.extensions["levqor.gate"].records.forget
    with after_each_gate_read(app, lambda _: forget([(account_id, key_format.hash_key(raw))])) as reads:
        response = client.get("/api/v1/workflows", headers={"x-api-key": raw})
    assert len(reads) == key_cache.FILL_ATTEMPTS
    assert response.status_code == 200, response.text


# ---- a leaked key must not lock its owner out: the emergency replacement (issue 13) --------------

HX = {"HX-Request": "true"}


def _make_stale(app, dev):
    """The session's last log-in is older than the freshness window (15 minutes)."""
    age_log_in(app, dev.client, app.config["SECURITY_FRESHNESS"] + timedelta(seconds=1))


def _create_on_the_portal(dev) -> str:
    created = dev.client.post(
        "/developer/api-keys/new",
        data={"grace_period_seconds": "0"},
        headers={**HX, "HX-Target": "key-panel", "X-CSRFToken": dev.csrf},
    )
    return re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', created.text).group(1)


def _replace(dev, htmx: bool = False):
    if htmx:
        return dev.client.post("/developer/api-keys/replace", headers={**HX, "X-CSRFToken": dev.csrf})
    return dev.client.post("/developer/api-keys/replace", data={"csrf_token": dev.csrf})


def _verify(dev, location: str, **fields):
    page = dev.client.get(location)
    assert page.status_code == 200 and "Confirm it is you" in page.text
    return dev.client.post(location, data={"password": PASSWORD, "csrf_token": csrf_from(page.text), **fields}), page


def _calls(client, raw: str) -> int:
    return client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code


def _account_id(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(sa.select(Account.id).where(Account.email == email))


def _panel(dev) -> str:
    return dev.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text


def test_a_leaked_key_is_replaced_at_once_after_a_fresh_log_in_once_a_day(portal, client, app):
    dev = portal().sign_up()
    leaked = _create_on_the_portal(dev)  # the day's key creation is spent
    assert dev.new_key().status_code == 429
    panel = _panel(dev)
    assert re.search(r'id="key-replace" href="/developer/api-keys/replace"', panel)
    assert "Replace now (leaked key)" in panel

    # Without a fresh log-in: sent to re-authenticate, and nothing happens or is spent.
    _make_stale(app, dev)
    asked = dev.client.get("/developer/api-keys/replace")
    assert asked.status_code == 302
    assert asked.headers["location"] == "/developer/account/verify?next=/developer/api-keys/replace"
    stale = _replace(dev)
    assert stale.status_code == 302 and stale.headers["location"] == asked.headers["location"]
    assert _replace(dev, htmx=True).headers["hx-redirect"] == asked.headers["location"]
    assert _calls(client, leaked) == 200
    assert creation_limit_spent(app, dev) is None  # a stale session spends no emergency replacement

    wrong, page = _verify(dev, asked.headers["location"], password="not the password")
    assert wrong.status_code == 200 and 'name="code"' not in page.text  # no second factor on this account
    assert dev.client.get("/developer/api-keys/replace").status_code == 302  # still not fresh
    verified, _ = _verify(dev, asked.headers["location"])
    assert verified.status_code == 302 and verified.headers["location"] == "/developer/api-keys/replace"

    # Fresh: the page says what will happen, the button does it.
    shown = dev.client.get("/developer/api-keys/replace")
    assert shown.status_code == 200, shown.text[:300]
    assert f"Key <code>{key_format.hint(leaked)}</code> stops working at once" in shown.text
    assert "Revoke and replace now" in shown.text
    replaced = _replace(dev)
    assert replaced.status_code == 201 and replaced.headers["cache-control"] == "no-store"
    new = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', replaced.text).group(1)
    assert new != leaked and key_format.is_well_formed(new)
    assert "the previous key stopped working at once" in replaced.text
    # The leaked key is refused from the next call on, in this process and through the gate's cache.
    assert _calls(client, leaked) == 401
    assert _calls(client, new) == 200

    # The audit trail records it as an emergency replacement, in the API and on the page.
    events = dev.client.get("/api/key/events").json()["data"]
    assert [(e["event"], e["emergency"]) for e in events] == [("rolled", True), ("revoked", True), ("created", False)]
    assert events[1]["key_id"] != events[0]["key_id"] == keys_of(app, dev)["active"]
    trail = dev.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-events"}).text
    assert trail.count("emergency replacement") == 2

    # Once a day: a second one is refused with when it is possible again, and changes nothing.
    again = _replace(dev)
    assert again.status_code == 429
    text = html.unescape(again.text)
    assert "You have already replaced a key in an emergency today: that is possible once a day." in text
    possible = creation_limit_spent(app, dev)
    assert possible is not None and "The next emergency replacement is possible after\n" in text
    # The page's time is the window's reset as read then: Redis gives its TTL in whole seconds, so
    # two reads a moment apart can name adjacent seconds.
    shown = re.search(r'id="replace-next">[^<]*<time datetime="([^"]+)"', again.text).group(1)
    assert abs((datetime.fromisoformat(shown) - possible).total_seconds()) <= 1
    assert abs(int(again.headers["retry-after"]) - (possible - utcnow()).total_seconds()) <= 2
    assert timedelta(hours=23) < possible - utcnow() <= timedelta(days=1, seconds=2)  # rounded up
    assert _calls(client, new) == 200
    assert len(dev.client.get("/api/key/events").json()["data"]) == 3
    # The panel no longer offers it, says when, and the API's daily limit is as it was.
    panel = _panel(dev)
    assert 'id="key-replace"' not in panel and "You have used today's emergency replacement" in panel
    assert "use “Replace now” instead" not in html.unescape(panel)
    assert dev.new_key().status_code == 429


def creation_limit_spent(app, dev):
    """When this developer's next emergency replacement is possible (None: it is possible now)."""
    with app.test_request_context():
        return creation_limit.next_emergency_at(_account_id(app, dev.email))


def keys_of(app, dev) -> dict:
    with app.app_context():
        ring = keys.key_ring(_account_id(app, dev.email))
        return {"active": ring.active.id if ring.active else None}


def test_with_two_factor_on_the_replacement_wants_the_authenticator_code_too(portal, client, app):
    dev = portal().sign_up()
    totp = enrol_authenticator(dev.client)
    dev.csrf = csrf_from(dev.client.get("/developer").text)
    leaked = _create_on_the_portal(dev)
    _make_stale(app, dev)
    location = dev.client.get("/developer/api-keys/replace").headers["location"]

    no_code, page = _verify(dev, location)
    assert 'name="code"' in page.text and "authenticator app" in page.text
    assert no_code.status_code == 200 and "Enter the code from your authenticator app" in no_code.text
    wrong, _ = _verify(dev, location, code="000000" if totp.now() != "000000" else "111111")
    assert wrong.status_code == 200 and "Invalid code" in wrong.text
    # The password alone (or with a wrong code) made nothing fresh.
    assert dev.client.get("/developer/api-keys/replace").status_code == 302
    assert _replace(dev).status_code == 302
    assert _calls(client, leaked) == 200

    right, _ = _verify(dev, location, code=fresh_code(totp))
    assert right.status_code == 302 and right.headers["location"] == "/developer/api-keys/replace"
    replaced = _replace(dev)
    assert replaced.status_code == 201, replaced.text[:300]
    new = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', replaced.text).group(1)
    assert _calls(client, leaked) == 401 and _calls(client, new) == 200


def test_re_authentication_takes_a_recovery_code_once(portal, app):
    dev = portal().sign_up()
    enrol_authenticator(dev.client)
    code = recovery_codes(dev.client)[0]
    _make_stale(app, dev)
    location = dev.client.get("/developer/api-keys/replace").headers["location"]
    assert _verify(dev, location, code=code)[0].status_code == 302
    assert dev.client.get("/developer/api-keys/replace").status_code == 200
    _make_stale(app, dev)
    assert dev.client.get("/developer/api-keys/replace").status_code == 302
    reused, _ = _verify(dev, location, code=code)
    assert reused.status_code == 200 and "Invalid code" in reused.text


def test_an_emergency_replacement_cuts_off_keys_in_a_grace_period_too(client, app, make_account):
    account_id, first = make_account()
    with app.app_context():
        account = db.session.get(Account, account_id)
        second = keys.issue(account, keys.Actor(email="t"), grace=timedelta(hours=24)).raw
        assert _calls(client, first) == 200  # still in its grace period
        third = keys.replace_at_once(account, keys.Actor(email="t")).raw
        events = [(e.event, e.emergency) for e in keys.events(account_id)]
    assert events[:3] == [("rolled", True), ("revoked", True), ("revoked", True)]
    assert events[3:] == [("rolled", False), ("created", False)]
    assert (_calls(client, first), _calls(client, second), _calls(client, third)) == (401, 401, 200)


def test_after_revoking_the_day_s_key_a_new_one_is_possible_at_once_in_an_emergency(portal, client, app):
    dev = portal().sign_up()
    _create_on_the_portal(dev)
    revoked = dev.client.post(
        "/developer/api-keys/revoke", headers={**HX, "HX-Target": "key-panel", "X-CSRFToken": dev.csrf}
    )
    text = html.unescape(revoked.text)
    then = "You can create a new key after \\d\\d \\w{3}, \\d\\d:\\d\\d UTC \\(one a day\\)"
    assert re.search(rf"is revoked: calls with it now fail\. {then}, or get one at once with “Replace now”", text)
    assert 'id="key-replace"' in revoked.text
    page = dev.client.get("/developer/api-keys/replace")  # just logged in: fresh
    assert "You have no active key: a new one is issued now." in page.text and "Issue a new key now" in page.text
    replaced = _replace(dev)
    assert replaced.status_code == 201
    new = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', replaced.text).group(1)
    assert _calls(client, new) == 200
    events = [(e["event"], e["emergency"]) for e in dev.client.get("/api/key/events").json()["data"]]
    assert events == [("created", True), ("revoked", False), ("created", False)]


def test_the_revoke_dialog_and_the_panel_say_when_a_new_key_is_possible(portal, app):
    dev = portal().sign_up()
    before = _panel(dev)
    after_first = datetime.fromisoformat(
        re.search(r'The next key is then possible after\s+<time datetime="([^"]+)"', before).group(1)
    )
    assert abs((after_first - (utcnow() + timedelta(days=1))).total_seconds()) <= 5
    _create_on_the_portal(dev)

    panel = _panel(dev)
    with app.test_request_context():
        next_creation = creation_limit.next_creation_at(_account_id(app, dev.email))
    # The limiter's own window (what a click would meet), about a day from the creation.
    assert abs((after_first - next_creation).total_seconds()) <= 5
    dialog = html.unescape(re.search(r'hx-confirm="([^"]+)"', panel).group(1))
    # Read a moment apart, the window's reset can name adjacent seconds (Redis's TTL is in whole
    # seconds), and so adjacent minutes.
    whens = {(next_creation + timedelta(seconds=s)).strftime("%d %b, %H:%M UTC") for s in (-1, 0, 1)}
    assert dialog.startswith("Revoke key lvq_") and "It stops working at once: calls with it fail." in dialog
    assert any(f"You can create a new key after {when} (one a day)" in dialog for when in whens)
    assert "if the key leaked, use “Replace now” instead" in dialog
    assert html.unescape(re.search(r'id="key-effect-revoke">(.+?)</li>', panel, re.S).group(1)).endswith(
        dialog.split("? ", 1)[1]
    )

    r = app.extensions["levqor.redis"]  # a day later, as far as the key-creation limit knows
    r.delete(*r.keys(f"LIMITS:LIMITER/{app.config['RATELIMIT_KEY_PREFIX']}/key-new:*"))
    panel = html.unescape(_panel(dev))
    dialog = re.search(r'id="key-revoke"[^>]*hx-confirm="([^"]+)"', panel).group(1)  # Roll asks too now
    assert dialog.endswith("It stops working at once: calls with it fail. You can create a new key right away.")
    assert "Replace now" not in panel  # the daily limit is not in the way: roll or revoke and create
    roll = re.search(r'id="key-effect-create">(.+?)</li>', panel, re.S)
    assert "the new key is shown once" in roll.group(1)
    assert "keeps working for the 1 or 24 hours chosen above" in " ".join(roll.group(1).split())


def test_the_roll_dialog_says_what_follows_and_when_a_new_key_is_possible(portal, app):
    dev = portal().sign_up()
    raw = _create_on_the_portal(dev)
    panel = _panel(dev)
    # The day's creation is spent: no roll is offered, so nothing asks about one.
    assert re.search(r'id="key-create"[^>]* disabled', panel)
    assert not re.search(r'id="key-create"[^>]*hx-confirm', panel) and "data-confirm=" not in panel

    r = app.extensions["levqor.redis"]  # a day later, as far as the key-creation limit knows
    r.delete(*r.keys(f"LIMITS:LIMITER/{app.config['RATELIMIT_KEY_PREFIX']}/key-new:*"))
    panel = html.unescape(_panel(dev))
    roll = re.search(r'<button type="submit" id="key-create"[^>]*hx-confirm="([^"]+)"[^>]*>Roll key</button>', panel)
    dialog = roll.group(1)
    # The roll spends the day's creation: the next key's time is the panel's, about a day from now.
    after = datetime.fromisoformat(
        re.search(r'The next key is then possible after\s+<time datetime="([^"]+)"', panel).group(1)
    )
    assert abs((after - (utcnow() + timedelta(days=1))).total_seconds()) <= 5
    when = after.strftime("%d %b, %H:%M UTC")
    assert dialog == (
        f"Roll key {key_format.hint(raw)}? A new key is issued and shown once, here. Your current key stops"
        f" working at once: calls with it fail. This uses today's key creation. You can create a new key after"
        f" {when} (one a day)."
    )
    # The button asks about the default (first) grace choice; each choice carries its own question.
    asked = dict(re.findall(r'<option value="(\d+)" data-confirm="([^"]+)"', panel))
    assert asked["0"] == dialog
    assert "Your current key keeps working for 1 h, listed as the previous key until then." in asked["3600"]
    assert "Your current key keeps working for 24 h, listed" in asked["86400"]
    assert all(q.endswith(f"You can create a new key after {when} (one a day).") for q in asked.values())
