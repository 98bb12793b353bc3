"""Events raised where they happen: an API job finishing on the real worker, a sandbox job, a
cancel, a key rolled or revoked; each delivered signed to a local receiver, and a failure to record
one never fails the action."""

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.keys.models import ApiKey
from levqor_core.webhooks import dispatch, service
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery

from .helpers import run_worker_burst, worker_env
from .webhook_helpers import Receiver, hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)


@pytest.fixture
def developer(client, make_account, private_targets_allowed):
    """A pro account with a key; `endpoint(url, events, sandbox)` subscribes it over the API."""
    account_id, raw = make_account(tier="pro")

    def call(method, path, **kwargs):
        return client.request(method, "/api" + path, headers={"x-api-key": raw}, **kwargs)

    def endpoint(url, events, sandbox=False):
        prefix = "/sandbox/v1" if sandbox else "/v1"
        made = call("POST", f"{prefix}/webhook_endpoints", json={"url": url, "events": events})
        assert made.status_code == 201, made.text
        return made.json()

    call.account_id, call.endpoint = account_id, endpoint
    return call


def deliver_all(app, event_type: str) -> list[WebhookDelivery]:
    """Attempt every delivery of `event_type` as the worker's task does; the rows afterwards."""
    with app.app_context():
        ids = db.session.scalars(sa.select(WebhookDelivery.id).where(WebhookDelivery.event_type == event_type)).all()
        for delivery_id in ids:
            assert dispatch.attempt(delivery_id) == DeliveryStatus.SUCCEEDED
        rows = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.id.in_(ids))).all()
        db.session.expunge_all()
        return list(rows)


def verified(hook: Receiver, secret: str) -> list[dict]:
    """Every body the receiver got, verified with the standardwebhooks library (not our signing code)."""
    return [Webhook(secret).verify(got["body"], got["headers"]) for got in hook.received]


def test_a_job_finishing_on_the_real_worker_delivers_a_signed_job_succeeded(
    app, developer, hook, database_url, redis_server
):
    endpoint = developer.endpoint(hook.url(), ["job.succeeded", "job.failed"])
    job = developer("POST", "/v1/jobs", json={"workflow": "text-stats", "input": {"text": "One two."}}).json()

    # The worker runs the job, then delivers its event from the webhook queue.
    run_worker_burst(
        worker_env(database_url, redis_server.url, SECRET_KEY="test-secret", WEBHOOK_ALLOW_PRIVATE_TARGETS="1")
    )

    with app.app_context():
        [row] = db.session.scalars(sa.select(WebhookDelivery).where(WebhookDelivery.event_type == "job.succeeded"))
        assert (row.status, row.attempts, row.endpoint_id) == (DeliveryStatus.SUCCEEDED, 1, endpoint["id"])
    [event] = verified(hook, endpoint["secret"])
    assert event["type"] == "job.succeeded" and event["data"]["sandbox"] is False
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == developer("GET", f"/v1/jobs/{job['id']}").json()["result"]
    assert hook.received[0]["headers"]["webhook-id"] == row.id


def test_a_canceled_job_delivers_job_canceled(app, developer, hook):
    endpoint = developer.endpoint(hook.url(), ["job.canceled"])
    job = developer("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).json()
    assert developer("POST", f"/v1/jobs/{job['id']}/cancel").status_code == 200
    deliver_all(app, "job.canceled")
    [event] = verified(hook, endpoint["secret"])
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "canceled"


def test_a_sandbox_job_delivers_to_the_sandbox_endpoint_marked_sandbox(app, developer, hook):
    live = developer.endpoint(hook.url(), ["job.succeeded"])
    sandbox = developer.endpoint(hook.url(), ["job.succeeded", "job.canceled"], sandbox=True)
    job = developer("POST", "/sandbox/v1/jobs", json={"workflow": "echo", "input": {"hello": "sandbox"}}).json()

    [row] = deliver_all(app, "job.succeeded")
    assert row.endpoint_id == sandbox["id"] != live["id"]
    [event] = verified(hook, sandbox["secret"])
    assert event["data"]["sandbox"] is True and event["data"]["id"] == job["id"]
    assert event["data"]["result"] == {"hello": "sandbox"}

    delayed = developer("POST", "/sandbox/v1/jobs", json={"workflow": "delay", "input": {"seconds": 30}}).json()
    developer("POST", f"/sandbox/v1/jobs/{delayed['id']}/cancel")
    deliver_all(app, "job.canceled")
    canceled = verified(hook, sandbox["secret"])[1]
    assert canceled["type"] == "job.canceled" and canceled["data"]["id"] == delayed["id"]
    assert canceled["data"]["status"] == "canceled" and canceled["data"]["sandbox"] is True


def test_a_sandbox_delay_job_announces_its_end_due_then_and_a_cancel_withdraws_it(app, developer, hook):
    endpoint = developer.endpoint(hook.url(), ["job.succeeded", "job.canceled"], sandbox=True)
    body = {"workflow": "delay", "input": {"seconds": 30}}
    job = developer("POST", "/sandbox/v1/jobs", json=body).json()
    assert job["status"] == "running"
    with app.app_context():
        [row] = db.session.scalars(sa.select(WebhookDelivery)).all()
        due, delivery_id = row.next_attempt_at, row.id
        assert row.event_type == "job.succeeded" and due > datetime.now(UTC) + timedelta(seconds=25)
        assert dispatch.attempt(delivery_id) is None  # not before the job's end
        assert dispatch.attempt(delivery_id, now=due) == DeliveryStatus.SUCCEEDED
    [event] = verified(hook, endpoint["secret"])
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == {"slept_seconds": 30} and event["data"]["sandbox"] is True

    canceled = developer("POST", "/sandbox/v1/jobs", json=body).json()
    developer("POST", f"/sandbox/v1/jobs/{canceled['id']}/cancel")
    with app.app_context():
        left = db.session.execute(sa.select(WebhookDelivery.event_type, WebhookDelivery.payload)).all()
    announced = [t for t, payload in left if json.loads(payload)["data"]["id"] == canceled["id"]]
    assert announced == ["job.canceled"]  # its job.succeeded was withdrawn


def test_key_roll_and_revoke_deliver_key_metadata_never_the_key(app, developer, hook):
    endpoint = developer.endpoint(hook.url(), ["key.rolled", "key.revoked"])
    with app.app_context():
        account = db.session.get(keys.Account, developer.account_id)
        issued = keys.issue(account, keys.Actor(email="dev@example.com"))
        revoked = keys.revoke(account, keys.Actor(email="dev@example.com"))
        new_hash = db.session.get(ApiKey, issued.record.id).key_hash
    deliver_all(app, "key.rolled")
    deliver_all(app, "key.revoked")
    rolled_event, revoked_event = verified(hook, endpoint["secret"])
    assert rolled_event["type"] == "key.rolled" and rolled_event["data"]["id"] == issued.record.id
    assert rolled_event["data"]["emergency"] is False
    assert revoked_event["type"] == "key.revoked" and revoked_event["data"]["id"] == revoked.id
    assert revoked_event["data"]["status"] == "revoked"
    for got in hook.received:
        assert issued.raw not in got["body"] and new_hash not in got["body"] and "whsec_" not in got["body"]


def test_replacing_a_leaked_key_at_once_is_an_emergency_roll_even_with_only_a_key_in_its_grace(app, developer, hook):
    endpoint = developer.endpoint(hook.url(), ["key.rolled"])
    with app.app_context():
        account = db.session.get(keys.Account, developer.account_id)
        replaced = keys.replace_at_once(account, keys.Actor(email="dev@example.com"))
        keys.issue(account, keys.Actor(email="dev@example.com"), grace=timedelta(hours=1))  # a planned roll
        keys.revoke(account, keys.Actor(email="dev@example.com"))  # leaves nothing usable...
        keys.issue(account, keys.Actor(email="dev@example.com"))
        rolled = keys.issue(account, keys.Actor(email="dev@example.com"), grace=timedelta(hours=1))
        db.session.execute(sa.update(ApiKey).where(ApiKey.status == "active").values(status="revoked"))
        db.session.commit()  # ...but the key in its grace period: it still works, and may be the leak
        last = keys.replace_at_once(account, keys.Actor(email="dev@example.com"))
        ids = replaced.record.id, rolled.record.id, last.record.id
    deliver_all(app, "key.rolled")
    events = verified(hook, endpoint["secret"])
    by_key = {e["data"]["id"]: e["data"]["emergency"] for e in events}
    assert by_key[ids[0]] is True and by_key[ids[1]] is False
    assert by_key[ids[2]] is True  # only a key in its grace period was cut off: still announced


def test_a_first_key_is_not_a_roll(app, make_account, hook, private_targets_allowed):
    account_id, _ = make_account(tier="pro", with_key=False)
    with app.app_context():
        account = db.session.get(keys.Account, account_id)
        service.create_endpoint(
            account, hook.url(), ["key.rolled"], sandbox=False, secret_key="test-secret", allow_private=True
        )
        keys.issue(account, keys.Actor(email="dev@example.com"))
        assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0


def test_a_failure_to_record_an_event_never_fails_the_job_or_the_key_action(app, developer, hook, monkeypatch, caplog):
    developer.endpoint(hook.url(), ["job.canceled", "key.revoked"])

    def broken(*args, **kwargs):
        raise RuntimeError("webhook store down")

    monkeypatch.setattr(service, "record_event", broken)
    job = developer("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).json()
    assert developer("POST", f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
    with app.app_context():
        account = db.session.get(keys.Account, developer.account_id)
        assert keys.revoke(account, keys.Actor(email="dev@example.com")).status == "revoked"
        assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0
    assert "could not record the job.canceled event" in caplog.text
    assert "could not record the key.revoked event" in caplog.text


def test_an_unqueued_delivery_is_still_recorded_for_the_sweep(app, developer, hook, monkeypatch):
    developer.endpoint(hook.url(), ["job.canceled"])

    def redis_away(ids, at=None):
        raise ConnectionError("no redis")

    monkeypatch.setattr(dispatch, "enqueue", redis_away)
    job = developer("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).json()
    assert developer("POST", f"/v1/jobs/{job['id']}/cancel").status_code == 200
    with app.app_context():
        [payload] = db.session.scalars(sa.select(WebhookDelivery.payload)).all()
        assert json.loads(payload)["data"]["id"] == job["id"]
