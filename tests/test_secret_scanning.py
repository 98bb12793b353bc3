"""GitHub secret scanning (issue 26 part 1): a report GitHub signs revokes the live keys in it at
once; its owner gets a mail and a `key.leaked` webhook event and can replace the key at once; a
forged, altered, unknown-key or oversized report changes nothing. GitHub's key endpoint is a real
HTTP fake on loopback (tests/fakes/github_keys_server.py), fetched by the app's own client code."""

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import format as key_format
from levqor_core.keys import leaks
from levqor_core.keys import service as keys
from levqor_core.keys.github_signature import GitHubKeys, SigningKeysUnavailable, UnknownSigningKey
from levqor_core.keys.models import ApiKey, KeyEvent
from levqor_core.metering import counters as metering
from levqor_core.webhooks import dispatch
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery

from .conftest import csrf_from
from .fakes.github_keys_server import GitHubKeysServer, SigningKey
from .webhook_helpers import Receiver, hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)

PATH = "/api/secret-scanning/github"
HX = {"HX-Request": "true"}
FOUND_AT = "https://github.com/octo-org/octo-repo/blob/2f1e0d3c/settings.py"


@pytest.fixture
def github(app, monkeypatch):
    """GitHub's key endpoint faked on loopback, and the app fetching its keys from there."""
    server = GitHubKeysServer().start()
    monkeypatch.setitem(app.extensions, "levqor.github_keys", GitHubKeys(server.url, refresh_floor=3600))
    yield server
    server.close()


def matches(*tokens: str, url: str = FOUND_AT) -> list[dict]:
    return [{"token": t, "type": "levqor_api_key", "url": url, "source": "content"} for t in tokens]


def send(client, body: bytes, headers: dict):
    response = client.post(PATH, content=body, headers=headers)
    leaks.wait_until_notified()  # the owner's notices go out after the answer
    return response


def report(client, signer: SigningKey, *tokens: str, url: str = FOUND_AT):
    """A report of `tokens`, signed as GitHub signs it (over the exact bytes sent)."""
    body = json.dumps(matches(*tokens, url=url)).encode()
    return send(client, body, signer.headers(body))


def calls(client, raw: str) -> int:
    return client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code


def counted(app, email: str) -> int:
    """The calls counted against the account's quota this period (the gate's live counter)."""
    with app.app_context():
        account = db.session.scalar(sa.select(Account).where(Account.email == email))
        period = metering.current_period(account, utcnow())
        return int(app.extensions["levqor.redis"].get(metering.usage_key(account.id, period)) or 0)


def created_on_the_portal(dev) -> str:
    """A key made on the portal: the day's key creation is spent by it."""
    made = dev.client.post(
        "/developer/api-keys/new",
        data={"grace_period_seconds": "0"},
        headers={**HX, "HX-Target": "key-panel", "X-CSRFToken": dev.csrf},
    )
    return re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', made.text).group(1)


def replace_now(dev):
    """The portal's "Replace now" (the session has just logged in, so it is fresh)."""
    shown = dev.client.get("/developer/api-keys/replace")
    assert shown.status_code == 200, shown.headers.get("location")
    return dev.client.post("/developer/api-keys/replace", data={"csrf_token": dev.csrf})


def new_key_in(page) -> str:
    return re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', page.text).group(1)


def state(app) -> dict:
    """What a report may change: keys, audit trail, webhook deliveries."""
    with app.app_context():
        return {
            "keys": sorted(db.session.execute(sa.select(ApiKey.id, ApiKey.status, ApiKey.leaked_at)).all()),
            "events": db.session.scalar(sa.select(sa.func.count()).select_from(KeyEvent)),
            "deliveries": db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)),
        }


def test_a_signed_report_revokes_a_live_key_at_once_and_its_owner_replaces_it_at_once(
    app, client, portal, github, smtp, hook
):
    dev = portal().sign_up()
    leaked = created_on_the_portal(dev)
    assert dev.new_key().status_code == 429  # the day's key creation is spent
    endpoint = client.post(
        "/api/v1/webhook_endpoints", json={"url": hook.url(), "events": ["key.leaked"]}, headers={"x-api-key": leaked}
    )
    assert endpoint.status_code == 201, endpoint.text
    assert calls(client, leaked) == 200
    usage_before = counted(app, dev.email)
    assert usage_before > 0  # the live counter the gate keeps

    # No portal session and no CSRF token: the signature alone authenticates GitHub's call.
    answer = report(client, github.current, leaked)
    assert answer.status_code == 200, answer.text
    assert answer.json() == [{"token_raw": leaked, "token_type": "levqor_api_key", "label": "true_positive"}]
    assert counted(app, dev.email) == usage_before  # GitHub's call counts against no quota

    # Dead from the next call on (through the gate's cache, which held the key's record).
    assert calls(client, leaked) == 401

    # One mail to the owner: which key, where, that it is revoked, and how to replace it now.
    [mail] = [m for m in smtp.to(dev.email) if "found in public" in m["Subject"]]  # after the sign-up's
    hint = key_format.hint(leaked)
    assert hint in mail["Subject"] and "revoked" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    assert FOUND_AT in text and "refused (401)" in text
    assert "/developer/api-keys/replace" in text and "whatever keys you created or replaced today" in text
    assert leaked not in mail.as_string()

    # The audit trail: the key revoked by GitHub's report, with where it was found.
    [latest, *_] = dev.client.get("/api/key/events").json()["data"]
    assert (latest["event"], latest["actor"], latest["leak_url"]) == ("revoked", "github-secret-scanning", FOUND_AT)
    trail = dev.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-events"}).text
    assert "found in public" in trail and f'href="{FOUND_AT}"' in trail

    # The webhook endpoint gets `key.leaked`: metadata and the URL, never the key or its hash.
    with app.app_context():
        [delivery_id] = db.session.scalars(
            sa.select(WebhookDelivery.id).where(WebhookDelivery.event_type == "key.leaked")
        ).all()
        assert dispatch.attempt(delivery_id) == DeliveryStatus.SUCCEEDED
        key_hash = db.session.scalar(sa.select(ApiKey.key_hash).where(ApiKey.id == latest["key_id"]))
    [event] = [Webhook(endpoint.json()["secret"]).verify(got["body"], got["headers"]) for got in hook.received]
    assert event["type"] == "key.leaked" and event["data"]["id"] == latest["key_id"]
    assert event["data"]["status"] == "revoked" and event["data"]["leak_url"] == FOUND_AT
    assert leaked not in hook.received[0]["body"] and key_hash not in hook.received[0]["body"]

    # The key panel says so first, with the way out; the owner replaces it at once, though the
    # day's key creation is spent.
    panel = dev.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text
    assert 'id="key-leaked"' in panel and hint in panel and f'href="{FOUND_AT}"' in panel
    assert '<a href="/developer/api-keys/replace" id="key-leaked-replace">Replace it now</a>' in panel
    replaced = replace_now(dev)
    assert replaced.status_code == 201, replaced.text[:300]
    new = new_key_in(replaced)
    assert calls(client, new) == 200 and calls(client, leaked) == 401
    assert 'id="key-leaked"' not in dev.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text


def test_the_replacement_is_owed_after_a_leak_even_when_todays_emergency_one_is_spent(app, client, portal, github):
    dev = portal().sign_up()
    created_on_the_portal(dev)
    first = new_key_in(replace_now(dev))  # today's emergency replacement, spent
    assert replace_now(dev).status_code == 429

    assert report(client, github.current, first).json()[0]["label"] == "true_positive"
    again = replace_now(dev)
    assert again.status_code == 201, again.text[:300]
    second = new_key_in(again)
    assert calls(client, second) == 200 and calls(client, first) == 401
    # Owed once per leak: the next is under the daily limit again.
    assert replace_now(dev).status_code == 429
    assert calls(client, second) == 200


def test_the_same_report_twice_revokes_once_and_mails_once(app, client, make_account, github, smtp):
    account_id, raw = make_account()
    with app.app_context():
        email = db.session.scalar(sa.text("SELECT email FROM accounts WHERE id = :id"), {"id": account_id})
    body = json.dumps(matches(raw)).encode()
    headers = github.current.headers(body)
    first, second = send(client, body, headers), send(client, body, headers)
    expected = [{"token_raw": raw, "token_type": "levqor_api_key", "label": "true_positive"}]
    assert first.json() == second.json() == expected
    with app.app_context():
        events = db.session.scalars(sa.select(KeyEvent).where(KeyEvent.leak_url.isnot(None))).all()
        assert len(events) == 1
    assert len(smtp.to(email)) == 1
    assert calls(client, raw) == 401


def test_the_same_report_sent_five_times_at_once_revokes_once(app, cx, make_account, github, smtp):
    account_id, raw = make_account()
    body = json.dumps(matches(raw)).encode()
    headers = github.current.headers(body)
    clients = [cx.test_client() for _ in range(5)]
    assert clients[0].get("/api/health").status_code == 200  # the app's middleware stack built once, first
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda c: c.post(PATH, content=body, headers=headers), clients))
    leaks.wait_until_notified()
    assert [a.status_code for a in answers] == [200] * 5
    assert {a.json()[0]["label"] for a in answers} == {"true_positive"}
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).where(KeyEvent.leak_url.isnot(None))) == 1
        email = db.session.scalar(sa.select(Account.email).where(Account.id == account_id))
    assert len(smtp.to(email)) == 1


def test_only_live_and_expiring_keys_are_true_positives(app, client, make_account, github):
    _, raw = make_account()
    _, revoked = make_account()
    with app.app_context():
        db.session.execute(
            sa.update(ApiKey).where(ApiKey.key_hash == key_format.hash_key(revoked)).values(status="revoked")
        )
        db.session.commit()
    unknown = key_format.generate()
    bad_checksum = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    answer = report(client, github.current, raw, unknown, bad_checksum, revoked, "lvq_not-a-key")
    assert answer.status_code == 200, answer.text
    assert [f["label"] for f in answer.json()] == [
        "true_positive",
        "false_positive",
        "false_positive",
        "false_positive",
        "false_positive",
    ]
    assert [f["token_raw"] for f in answer.json()] == [raw, unknown, bad_checksum, revoked, "lvq_not-a-key"]


def test_a_very_long_url_does_not_stop_the_revocation(app, client, make_account, github):
    _, raw = make_account()
    long_url = "https://github.com/octo-org/octo-repo/blob/main/" + "d/" * 2500 + "settings.py"
    answer = report(client, github.current, raw, url=long_url)
    assert answer.status_code == 200 and answer.json()[0]["label"] == "true_positive"
    assert calls(client, raw) == 401
    with app.app_context():
        stored = db.session.scalar(sa.select(KeyEvent.leak_url).where(KeyEvent.leak_url.isnot(None)))
    assert stored == long_url[: leaks.MAX_URL_CHARS]


def test_a_key_in_its_grace_period_is_revoked_and_the_active_one_keeps_working(app, client, portal, github):
    dev = portal().sign_up()
    old = created_on_the_portal(dev)
    with app.app_context():
        account = db.session.scalar(sa.select(Account).where(Account.email == dev.email))
        new = keys.issue(account, keys.Actor(email=dev.email), grace=timedelta(hours=1)).raw
    assert calls(client, old) == 200
    assert report(client, github.current, old).json()[0]["label"] == "true_positive"
    assert calls(client, old) == 401 and calls(client, new) == 200


# ---- what must change nothing ----------------------------------------------------------------------


@pytest.fixture
def victim(make_account, client):
    """A live key, and the assertion that it still works and nothing was recorded."""
    _, raw = make_account()
    assert calls(client, raw) == 200
    return raw


def _unchanged(app, client, raw, before):
    assert calls(client, raw) == 200
    assert state(app) == before


def test_a_forged_report_changes_nothing(app, client, github, victim, smtp):
    before = state(app)
    body = json.dumps(matches(victim)).encode()
    forger = SigningKey()
    forged = {**forger.headers(body), "Github-Public-Key-Identifier": github.current.identifier}
    answer = send(client, body, forged)
    assert answer.status_code == 401 and answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"].endswith("/invalid-secret-scanning-signature")
    unsigned = send(client, body, {"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and unsigned.json()["type"].endswith("/invalid-secret-scanning-signature")
    assert "Github-Public-Key-Signature" in unsigned.json()["detail"]
    for headers in (
        {**github.current.headers(body), "Github-Public-Key-Signature": "not base64!"},
        {**github.current.headers(body), "Github-Public-Key-Signature": "AAAA"},  # base64, not a signature
        {k: v for k, v in github.current.headers(body).items() if k != "Github-Public-Key-Identifier"},
    ):
        refused = send(client, body, headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
    _unchanged(app, client, victim, before)
    assert smtp.messages == []


def test_a_replayed_report_with_a_changed_body_changes_nothing(app, client, github, victim):
    before = state(app)
    signed = json.dumps(matches(key_format.generate())).encode()  # a genuine report of another token
    headers = github.current.headers(signed)
    assert send(client, signed, headers).status_code == 200
    before = state(app)
    changed = json.dumps(matches(victim)).encode()
    answer = send(client, changed, headers)
    assert answer.status_code == 401 and answer.json()["type"].endswith("/invalid-secret-scanning-signature")
    # Even a change GitHub's JSON would not notice (a space) breaks the signature over the raw bytes.
    spaced = json.dumps(matches(victim), indent=1).encode()
    assert send(client, spaced, github.current.headers(json.dumps(matches(victim)).encode())).status_code == 401
    _unchanged(app, client, victim, before)


def test_an_unknown_key_identifier_changes_nothing_and_refetches_at_most_once_per_floor(app, client, github, victim):
    before = state(app)
    stranger = SigningKey()  # a valid signature, by a key GitHub does not publish
    answer = report(client, stranger, victim)
    assert answer.status_code == 401 and answer.json()["type"].endswith("/unknown-secret-scanning-key")
    assert github.requests == 1  # the first report fetched the keys; nothing was cached before
    for _ in range(3):
        assert report(client, stranger, victim).status_code == 401
    assert github.requests == 1  # within the floor: no new fetch per made-up identifier
    _unchanged(app, client, victim, before)


def test_an_oversized_report_changes_nothing(app, client, github, victim):
    before = state(app)
    padding = [{"token": "lvq_x", "type": "levqor_api_key", "url": "https://github.com/" + "a" * 2000}] * 40
    body = json.dumps(matches(victim) + padding).encode()
    assert len(body) > 64 * 1024
    answer = send(client, body, github.current.headers(body))
    assert answer.status_code == 413 and answer.json()["type"].endswith("/payload-too-large")
    _unchanged(app, client, victim, before)


def test_a_signed_but_malformed_report_changes_nothing(app, client, github, victim):
    before = state(app)
    for body in (
        json.dumps({"token": victim}).encode(),  # not an array
        json.dumps([{"type": "levqor_api_key", "url": FOUND_AT}]).encode(),  # no token
        b"[{not json",
        b"[]",
    ):
        answer = send(client, body, github.current.headers(body))
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    _unchanged(app, client, victim, before)


def test_keys_github_could_not_serve_answer_503_and_change_nothing(app, client, github, victim):
    before = state(app)
    github.status = 500
    answer = report(client, github.current, victim)
    assert answer.status_code == 503 and answer.json()["type"].endswith("/secret-scanning-keys-unavailable")
    assert answer.headers["retry-after"] == "60"
    _unchanged(app, client, victim, before)


# ---- GitHub's keys: fetched, cached, refreshed on an unknown identifier, with a floor ---------------


def test_a_new_github_key_is_fetched_when_it_first_signs_and_a_withdrawn_one_stops_verifying(github):
    clock = [1000.0]
    keys = GitHubKeys(github.url, refresh_floor=60, clock=lambda: clock[0])
    body = b'[{"token": "lvq_x", "type": "levqor_api_key"}]'
    old = github.current
    keys.verify(body, old.identifier, old.sign(body))
    keys.verify(body, old.identifier, old.sign(body))
    assert github.requests == 1  # cached

    rotated = SigningKey()
    github.keys = [rotated]  # GitHub publishes a new key and withdraws the old one
    clock[0] += 61
    keys.verify(body, rotated.identifier, rotated.sign(body))  # unknown: one refresh finds it
    assert github.requests == 2
    with pytest.raises(UnknownSigningKey):
        keys.verify(body, old.identifier, old.sign(body))  # withdrawn; within the floor, no fetch
    assert github.requests == 2

    newer = SigningKey()
    github.keys = [newer, rotated]
    clock[0] += 30
    with pytest.raises(UnknownSigningKey):
        keys.verify(body, newer.identifier, newer.sign(body))  # within the floor: not fetched yet
    clock[0] += 31
    keys.verify(body, newer.identifier, newer.sign(body))
    assert github.requests == 3


def test_a_fetch_that_fails_is_a_503_not_an_unknown_key_and_is_retried_after_the_floor(github):
    clock = [0.0]
    keys = GitHubKeys(github.url, refresh_floor=60, clock=lambda: clock[0])
    body = b"[]"
    github.status = 502
    with pytest.raises(SigningKeysUnavailable):
        keys.verify(body, github.current.identifier, github.current.sign(body))
    with pytest.raises(SigningKeysUnavailable):
        keys.verify(body, github.current.identifier, github.current.sign(body))
    assert github.requests == 1
    github.status = 200
    clock[0] += 60
    keys.verify(body, github.current.identifier, github.current.sign(body))
    assert github.requests == 2


def test_the_report_endpoint_is_internal_and_signed_and_stripe_keeps_its_own_body_limit(app):
    from .helpers import load_spec

    spec = load_spec()
    operation = spec["paths"]["/secret-scanning/github"]["post"]
    assert operation["x-internal"] is True and operation["security"] == [{"GitHubSecretScanning": []}]
    assert operation["x-levqor-max-body-bytes"] == 64 * 1024
    assert spec["paths"]["/billing/webhook"]["post"]["x-levqor-max-body-bytes"] == 1024 * 1024
    assert "key.leaked" in spec["x-webhooks"]


def test_body_limits_come_from_the_spec_and_refuse_what_the_guard_cannot_apply():
    from levqor_core.web.request_guard import body_limits

    spec = {"servers": [{"url": "https://api.levqor.dev/api"}, {"url": "/api"}], "paths": {}}
    spec["paths"]["/a"] = {"post": {"x-levqor-max-body-bytes": 10}, "put": {"x-levqor-max-body-bytes": 10}, "get": {}}
    assert body_limits(spec) == {"/api/a": 10}
    with pytest.raises(ValueError, match="fixed path"):  # the guard runs before routing: paths only
        body_limits({"paths": {"/a/{id}": {"post": {"x-levqor-max-body-bytes": 10}}}})
    with pytest.raises(ValueError, match="disagree"):
        body_limits(
            {"paths": {"/a": {"post": {"x-levqor-max-body-bytes": 10}, "put": {"x-levqor-max-body-bytes": 20}}}}
        )


def test_a_portal_session_still_needs_its_csrf_token_on_the_key_operations(portal):
    dev = portal().sign_up()
    refused = dev.client.post("/api/key/new", json={})
    assert refused.status_code == 403 and refused.json()["type"].endswith("/csrf-failed")
    assert csrf_from(dev.client.get("/developer").text)  # and with it, as before (test_keys)


def test_the_leak_mail_names_every_key_of_one_report(app):
    subject, body = leaks.leak_mail(
        [("lvq_1234…abcd", FOUND_AT), ("lvq_5678…efgh", None)], utcnow(), "https://levqor.test"
    )
    assert "lvq_1234…abcd, lvq_5678…efgh were found in public" in subject
    assert FOUND_AT in body and "(no URL given)" in body
    assert "https://levqor.test/developer/api-keys/replace" in body


def test_a_report_revokes_once_on_sqlite_the_embedded_default_too(tmp_path, redis_server):
    from flask_migrate import upgrade

    from .helpers import app_on_sqlite

    app = app_on_sqlite(tmp_path / "levqor.db", redis_server)
    with app.app_context():
        upgrade()
        account = Account(email="sqlite-owner@example.com", password_hash="x", tier="sandbox")
        db.session.add(account)
        db.session.commit()
        raw = keys.issue(account, keys.Actor(email="test")).raw
        feedback = leaks.report(matches(raw, key_format.generate()))
        assert [f["label"] for f in feedback] == ["true_positive", "false_positive"]
        assert leaks.report(matches(raw))[0]["label"] == "true_positive"  # again: the same answer...
        trail = db.session.execute(sa.select(KeyEvent.event, KeyEvent.leak_url).where(KeyEvent.actor != "test")).all()
        assert trail == [("revoked", FOUND_AT)]  # ...and one revocation
        assert db.session.scalar(sa.select(ApiKey.status)) == "revoked"
        assert leaks.replacement_owed(account.id)
    leaks.wait_until_notified()


def test_a_mail_handed_over_while_the_process_exits_is_still_sent(app, smtp, monkeypatch):
    """A report answered just before the process exits: its notice's mail finds the outbox closed."""
    from levqor_core.accounts import mail as account_mail

    closed = ThreadPoolExecutor(max_workers=1)
    closed.shutdown()
    monkeypatch.setattr(account_mail, "_outbox", closed)
    with app.app_context():
        account_mail.send("late-owner@example.com", "Your key was found in public", "Replace it now.")
    assert len(smtp.to("late-owner@example.com")) == 1
