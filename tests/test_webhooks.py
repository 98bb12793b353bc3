"""Webhooks' core: endpoints and their secrets, signed deliveries to a real local receiver, retries
on the Standard Webhooks schedule (time controlled), resend, the private-network guard."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.webhooks import delivery, dispatch, service, targets
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

from .webhook_helpers import Receiver

SECRET_KEY = "test-secret"
PUBLIC = "93.184.215.14"  # a global address: what a public host resolves to


@pytest.fixture
def receiver():
    made = []

    def make(*statuses):
        made.append(Receiver(statuses or (200,)))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def account(app_ctx):
    def make(tier: str = "pro") -> Account:
        row = Account(email=f"hooks-{tier}-{datetime.now().timestamp()}@example.com", password_hash="x", tier=tier)
        db.session.add(row)
        db.session.commit()
        return row

    return make


def create(acct, url, events=("job.succeeded",), *, sandbox=False, allow_private=True, resolve=targets.system_resolver):
    return service.create_endpoint(
        acct, url, list(events), sandbox=sandbox, secret_key=SECRET_KEY, allow_private=allow_private, resolve=resolve
    )


def attempt(delivery_id, now, **kw):
    kw.setdefault("allow_private", True)
    return delivery.attempt(delivery_id, secret_key=SECRET_KEY, now=now, **kw)


def event(acct, event_type="job.succeeded", data=None, now=None, sandbox=False) -> list[str]:
    ids = service.record_event(
        acct.id, event_type, data or {"id": "job_1", "status": "succeeded"}, sandbox=sandbox, now=now
    )
    db.session.commit()
    return ids


def test_a_finished_job_is_delivered_signed_and_the_receiver_verifies_it(account, receiver):
    hook = receiver(200)
    acct = account()
    endpoint, secret = create(acct, hook.url())
    assert secret.startswith("whsec_")
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)

    assert attempt(delivery_id, now) == DeliveryStatus.SUCCEEDED
    [got] = hook.received
    # Verified with the standardwebhooks library on the receiving side, with the secret shown once.
    payload = Webhook(secret).verify(got["body"], got["headers"])
    assert payload["type"] == "job.succeeded" and payload["data"] == {
        "id": "job_1",
        "status": "succeeded",
        "sandbox": False,
    }
    assert got["headers"]["webhook-id"] == delivery_id and got["path"] == "/hooks?source=levqor"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 32).verify(got["body"], got["headers"])
    logged = db.session.get(WebhookDelivery, delivery_id)
    assert (logged.attempts, logged.last_status_code, logged.last_response_excerpt) == (1, 200, "thanks")
    assert logged.last_latency_ms is not None


def test_the_secret_is_stored_only_encrypted(account):
    acct = account()
    endpoint, secret = create(acct, "http://127.0.0.1:9/hooks")
    stored = db.session.execute(sa.text("SELECT * FROM webhook_endpoints")).mappings().one()
    assert all(secret not in str(value) and secret[6:] not in str(value) for value in stored.values())


def test_a_failing_receiver_gets_retries_with_the_same_id_on_growing_delays_then_success(account, receiver):
    hook = receiver(500, 503, 200)
    acct = account()
    create(acct, hook.url())
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    [delivery_id] = event(acct, now=t0)

    assert attempt(delivery_id, t0) == DeliveryStatus.PENDING
    row = db.session.get(WebhookDelivery, delivery_id)
    first_retry = row.next_attempt_at - t0
    assert first_retry <= timedelta(seconds=10)
    assert row.last_status_code == 500 and len(row.last_response_excerpt) == delivery.EXCERPT_BYTES

    assert attempt(delivery_id, t0 + timedelta(seconds=1)) is None  # not due yet: nothing sent
    assert len(hook.received) == 1

    t1 = t0 + first_retry
    assert attempt(delivery_id, t1) == DeliveryStatus.PENDING
    db.session.expire_all()
    second_retry = db.session.get(WebhookDelivery, delivery_id).next_attempt_at - t1
    assert second_retry > first_retry

    assert attempt(delivery_id, t1 + second_retry) == DeliveryStatus.SUCCEEDED
    assert [r["headers"]["webhook-id"] for r in hook.received] == [delivery_id] * 3
    assert len({r["headers"]["webhook-signature"] for r in hook.received}) == 3  # each signed at its own time


def test_the_schedule_runs_about_a_day_then_the_delivery_fails(account, receiver):
    hook = receiver(500)
    acct = account()
    create(acct, hook.url())
    now = datetime(2026, 12, 1, tzinfo=UTC)
    [delivery_id] = event(acct, now=now)
    for _ in range(len(delivery.RETRY_DELAYS) + 1):
        status = attempt(delivery_id, now)
        db.session.expire_all()
        row = db.session.get(WebhookDelivery, delivery_id)
        now = row.next_attempt_at or now
    assert status == DeliveryStatus.FAILED and row.attempts == len(delivery.RETRY_DELAYS) + 1
    assert timedelta(hours=20) < sum(delivery.RETRY_DELAYS, timedelta()) < timedelta(hours=30)


def test_resend_delivers_the_same_message_again(account, receiver):
    hook = receiver(200)
    acct = account()
    create(acct, hook.url())
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)
    attempt(delivery_id, now)
    service.resend(db.session.get(WebhookDelivery, delivery_id), now=now)
    assert attempt(delivery_id, now) == DeliveryStatus.SUCCEEDED
    assert [r["headers"]["webhook-id"] for r in hook.received] == [delivery_id, delivery_id]
    assert hook.received[0]["body"] == hook.received[1]["body"]


def test_two_workers_taking_the_same_delivery_send_it_once(app, account, receiver):
    hook = receiver(200)
    acct = account()
    create(acct, hook.url())
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)

    def one(_):
        with app.app_context():
            return attempt(delivery_id, now)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(8)))
    assert sorted(outcomes, key=str) == [None] * 7 + [DeliveryStatus.SUCCEEDED]
    assert len(hook.received) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",  # plain http
        "https://127.0.0.1/hook",  # loopback
        "https://10.1.2.3/hook",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
        "https://[::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",  # private IPv4 mapped into IPv6
        "https://user:pw@hooks.example/hook",
        "ftp://hooks.example/hook",
    ],
)
def test_private_loopback_and_odd_targets_are_refused_without_the_setting(account, url):
    with pytest.raises(service.EndpointRefused):
        create(account(), url, allow_private=False, resolve=lambda host, port: [host.strip("[]")])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEndpoint)) == 0


def test_a_host_resolving_to_any_private_address_is_refused(account):
    resolve = lambda host, port: [PUBLIC, "10.0.0.7"]  # noqa: E731
    with pytest.raises(service.EndpointRefused, match="non-public"):
        create(account(), "https://hooks.example/hook", allow_private=False, resolve=resolve)


def test_a_dns_answer_that_turns_private_after_the_check_reaches_nothing(account, receiver):
    hook = receiver(200)
    acct = account()
    answers = {"now": [PUBLIC]}
    resolve = lambda host, port: answers["now"]  # noqa: E731
    create(acct, f"https://hooks.example:{hook.port}/hook", allow_private=False, resolve=resolve)
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)
    answers["now"] = ["127.0.0.1"]  # rebinding: the same name now points at this machine
    assert attempt(delivery_id, now, allow_private=False, resolve=resolve) == DeliveryStatus.PENDING
    row = db.session.get(WebhookDelivery, delivery_id)
    assert "non-public" in row.last_error and row.last_status_code is None
    assert hook.received == []


def test_a_delivery_connects_to_the_address_it_checked_and_names_the_host(account, receiver):
    hook = receiver(200)
    acct = account()
    resolve = lambda host, port: ["127.0.0.1"]  # noqa: E731
    create(acct, f"http://hooks.example:{hook.port}/hook", resolve=resolve)
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)
    assert attempt(delivery_id, now, resolve=resolve) == DeliveryStatus.SUCCEEDED
    assert hook.received[0]["headers"]["host"] == f"hooks.example:{hook.port}"


def test_redirects_are_not_followed(account):
    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        acct = account()
        create(acct, f"http://127.0.0.1:{server.server_address[1]}/hook")
        now = datetime.now(UTC)
        [delivery_id] = event(acct, now=now)
        assert attempt(delivery_id, now) == DeliveryStatus.PENDING
        assert db.session.get(WebhookDelivery, delivery_id).last_status_code == 307
    finally:
        server.shutdown()
        server.server_close()


def test_an_endpoint_failing_for_days_is_disabled_and_its_owner_told(account, receiver):
    hook = receiver(500)
    acct = account()
    endpoint, _ = create(acct, hook.url())
    told = []
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for day in range(delivery.DISABLE_AFTER.days + 1):  # one failing delivery a day
        now = start + timedelta(days=day)
        [delivery_id] = event(acct, now=now)
        attempt(delivery_id, now, on_disabled=told.append)
    db.session.expire_all()
    endpoint = db.session.get(WebhookEndpoint, endpoint.id)
    assert endpoint.disabled_at == start + delivery.DISABLE_AFTER
    assert [e.id for e in told] == [endpoint.id]
    assert event(acct, now=start + timedelta(days=8)) == []  # a disabled endpoint gets no new deliveries


def test_a_success_clears_the_failure_run(account, receiver):
    hook = receiver(500, 200)
    acct = account()
    endpoint, _ = create(acct, hook.url())
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)
    attempt(delivery_id, now)
    assert db.session.get(WebhookEndpoint, endpoint.id).failing_since == now
    attempt(delivery_id, now + timedelta(seconds=5))
    assert db.session.get(WebhookEndpoint, endpoint.id).failing_since is None


def test_events_go_only_to_endpoints_subscribed_to_them_and_of_the_same_side(account, receiver):
    hook = receiver(200)
    acct = account()
    jobs_only, _ = create(acct, hook.url(), events=service.JOB_EVENTS)
    keys_only, _ = create(acct, hook.url(), events=["key.revoked"])
    sandbox, _ = create(acct, hook.url(), events=service.JOB_EVENTS, sandbox=True)
    live_ids = event(acct, "job.failed")
    sandbox_ids = event(acct, "job.failed", sandbox=True)
    assert [db.session.get(WebhookDelivery, i).endpoint_id for i in live_ids] == [jobs_only.id]
    assert [db.session.get(WebhookDelivery, i).endpoint_id for i in sandbox_ids] == [sandbox.id]
    assert json.loads(db.session.get(WebhookDelivery, sandbox_ids[0]).payload)["data"]["sandbox"] is True
    assert keys_only.id not in {db.session.get(WebhookDelivery, i).endpoint_id for i in live_ids + sandbox_ids}


def test_unknown_event_types_are_refused_with_the_known_ones(account):
    with pytest.raises(service.EndpointRefused, match="job.succeeded"):
        create(account(), "http://127.0.0.1:9/hook", events=["job.exploded"])


def test_the_tier_caps_endpoints_per_account(account):
    acct = account("sandbox")
    limit = tiers.get("sandbox").max_webhook_endpoints
    for _ in range(limit):
        create(acct, "http://127.0.0.1:9/hook")
    with pytest.raises(service.TooManyEndpoints):
        create(acct, "http://127.0.0.1:9/hook")
    create(acct, "http://127.0.0.1:9/hook", sandbox=True)  # the sandbox side has its own count


def test_deliveries_older_than_30_days_are_purged(account, receiver):
    acct = account()
    create(acct, "http://127.0.0.1:9/hook")
    old, recent = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    [old_id] = event(acct, now=old)
    [recent_id] = event(acct, now=recent)
    assert delivery.purge(now=datetime(2026, 12, 1, tzinfo=UTC)) == 1
    assert db.session.get(WebhookDelivery, old_id) is None and db.session.get(WebhookDelivery, recent_id)


# --- the API (v1 and sandbox twins), through the app ---------------------------------------------


@pytest.fixture
def private_targets_allowed(app, monkeypatch):
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", True)


@pytest.mark.parametrize("prefix", ["/api/v1", "/api/sandbox/v1"])
def test_endpoints_over_the_api_create_list_get_test_delete(
    client, make_account, receiver, private_targets_allowed, prefix, app
):
    hook = receiver(200)
    _, key = make_account(tier="pro")
    headers = {"x-api-key": key}
    made = client.post(
        f"{prefix}/webhook_endpoints", json={"url": hook.url(), "events": ["job.failed"]}, headers=headers
    )
    assert made.status_code == 201, made.text
    endpoint, secret = made.json(), made.json()["secret"]
    assert made.headers["Cache-Control"] == "no-store"
    assert made.headers["Location"] == f"{prefix}/webhook_endpoints/{endpoint['id']}"
    assert endpoint["sandbox"] is (prefix == "/api/sandbox/v1")

    listed = client.get(f"{prefix}/webhook_endpoints", headers=headers).json()["data"]
    assert [e["id"] for e in listed] == [endpoint["id"]] and "secret" not in listed[0]
    got = client.get(f"{prefix}/webhook_endpoints/{endpoint['id']}", headers=headers).json()
    assert got["url"] == hook.url() and "secret" not in got

    sent = client.post(f"{prefix}/webhook_endpoints/{endpoint['id']}/test", headers=headers)
    assert sent.status_code == 202 and sent.json()["event_type"] == "ping"
    with app.app_context():
        [queued] = dispatch.queue().get_jobs()
        assert queued.func_name == dispatch.TASK and queued.args == (sent.json()["id"],)
        assert dispatch.attempt(sent.json()["id"]) == DeliveryStatus.SUCCEEDED  # what the worker's task runs
    assert Webhook(secret).verify(hook.received[0]["body"], hook.received[0]["headers"])["type"] == "ping"

    assert client.delete(f"{prefix}/webhook_endpoints/{endpoint['id']}", headers=headers).status_code == 204
    gone = client.get(f"{prefix}/webhook_endpoints/{endpoint['id']}", headers=headers)
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"


def test_another_accounts_endpoint_is_a_404(client, make_account, private_targets_allowed):
    _, owner = make_account(tier="pro")
    _, stranger = make_account(tier="pro")
    made = client.post(
        "/api/v1/webhook_endpoints",
        json={"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]},
        headers={"x-api-key": owner},
    ).json()
    for method in ("get", "delete"):
        answer = getattr(client, method)(f"/api/v1/webhook_endpoints/{made['id']}", headers={"x-api-key": stranger})
        assert answer.status_code == 404
    assert (
        client.post(f"/api/v1/webhook_endpoints/{made['id']}/test", headers={"x-api-key": stranger}).status_code == 404
    )
    assert client.get(f"/api/v1/webhook_endpoints/{made['id']}", headers={"x-api-key": owner}).status_code == 200


def _post_endpoint(client, key: str, url: str, events: list[str]):
    return client.post("/api/v1/webhook_endpoints", json={"url": url, "events": events}, headers={"x-api-key": key})


def test_a_private_target_is_a_400_problem_over_the_api_without_the_setting(client, make_account):
    _, key = make_account(tier="pro")
    refused = _post_endpoint(client, key, "https://127.0.0.1/hook", ["job.failed"])
    assert refused.status_code == 400
    assert refused.json()["type"].endswith("/invalid-webhook-endpoint") and "non-public" in refused.json()["detail"]


def test_the_endpoint_cap_is_a_409_problem_with_the_limit(client, make_account, private_targets_allowed):
    _, key = make_account(tier="sandbox")
    body = {"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]}
    for _ in range(tiers.get("sandbox").max_webhook_endpoints):
        assert client.post("/api/v1/webhook_endpoints", json=body, headers={"x-api-key": key}).status_code == 201
    refused = client.post("/api/v1/webhook_endpoints", json=body, headers={"x-api-key": key})
    assert refused.status_code == 409 and refused.json()["limit"] == tiers.get("sandbox").max_webhook_endpoints


def test_unknown_event_types_are_refused_by_the_spec(client, make_account, private_targets_allowed):
    _, key = make_account(tier="pro")
    refused = _post_endpoint(client, key, "http://127.0.0.1:9/hook", ["job.exploded"])
    assert refused.status_code == 400 and "job.exploded" in refused.json()["detail"]


def test_quota_events_fire_once_per_period_each_from_the_alerts_crossing(app, make_account, private_targets_allowed):
    from levqor_core.metering import counters as metering
    from levqor_core.ops import alerts

    account_id, _ = make_account(tier="pro")
    quota = tiers.get("pro").monthly_quota
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    with app.app_context():
        acct = db.session.get(Account, account_id)
        create(acct, "http://127.0.0.1:9/hook", events=service.QUOTA_EVENTS)
        r = app.extensions["levqor.redis"]

        def used(calls, at):
            r.set(metering.usage_key(account_id, metering.current_period(acct, at)), calls)
            alerts.run(r, now=at)
            return [
                (d.event_type, json.loads(d.payload)["data"]["calls_used"])
                for d in db.session.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at))
            ]

        assert used(quota * 80 // 100 - 1, now) == []
        assert used(quota * 80 // 100, now) == [("quota.warning", 8000)]
        assert used(quota * 90 // 100, now) == [("quota.warning", 8000)]  # the same period: once
        assert used(quota + 5, now) == [("quota.warning", 8000), ("quota.exceeded", 10005)]
        assert used(quota + 50, now)[-1] == ("quota.exceeded", 10005)
        next_month = datetime(2026, 12, 2, tzinfo=UTC)
        assert used(quota, next_month)[2:] == [("quota.warning", 10000), ("quota.exceeded", 10000)]


def test_the_real_worker_delivers_and_retries_on_its_own_queue(
    client, app, make_account, receiver, private_targets_allowed, database_url, redis_server
):
    from .helpers import run_worker_burst, worker_env

    hook = receiver(500, 200)
    _, key = make_account(tier="pro")
    made = client.post(
        "/api/v1/webhook_endpoints", json={"url": hook.url(), "events": ["job.failed"]}, headers={"x-api-key": key}
    ).json()
    ping = client.post(f"/api/v1/webhook_endpoints/{made['id']}/test", headers={"x-api-key": key}).json()
    env = worker_env(database_url, redis_server.url, SECRET_KEY="test-secret", WEBHOOK_ALLOW_PRIVATE_TARGETS="1")

    run_worker_burst(env)  # the first attempt: 500, the retry scheduled 5 s on
    with app.app_context():
        row = db.session.get(WebhookDelivery, ping["id"])
        assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.PENDING, 1, 500)
        retry_at = row.next_attempt_at
    time.sleep(max(0.0, (retry_at - datetime.now(UTC)).total_seconds()) + 1)
    run_worker_burst(env)  # RQ's scheduler in the worker queues the retry, which succeeds
    with app.app_context():
        db.session.expire_all()
        row = db.session.get(WebhookDelivery, ping["id"])
        assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.SUCCEEDED, 2, 200)
    assert [r["headers"]["webhook-id"] for r in hook.received] == [ping["id"]] * 2
    assert Webhook(made["secret"]).verify(hook.received[1]["body"], hook.received[1]["headers"])["type"] == "ping"


def test_the_owner_of_an_endpoint_disabled_after_days_of_failures_gets_an_email(app, account, receiver):
    class Outbox:
        def __init__(self):
            self.sent = []

        def send(self, to, subject, body):
            self.sent.append((to, subject, body))

    hook, outbox = receiver(500), Outbox()
    acct = account()
    endpoint, _ = create(acct, hook.url())
    start = datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", True)
        for day in range(delivery.DISABLE_AFTER.days + 1):
            now = start + timedelta(days=day)
            [delivery_id] = event(acct, now=now)
            dispatch.attempt(delivery_id, now=now, sender=outbox)
    [(to, subject, body)] = outbox.sent
    assert to == acct.email and "disabled" in subject
    assert hook.url() in body and "/developer/webhooks" in body


def test_a_secret_that_no_longer_decrypts_is_an_error_on_the_delivery_not_a_crash(account, receiver):
    hook = receiver(200)
    acct = account()
    create(acct, hook.url())
    now = datetime.now(UTC)
    [delivery_id] = event(acct, now=now)
    status = delivery.attempt(delivery_id, secret_key="another-secret-key", allow_private=True, now=now)
    assert status == DeliveryStatus.PENDING and hook.received == []
    assert "SECRET_KEY" in db.session.get(WebhookDelivery, delivery_id).last_error


def test_the_api_docs_page_lists_every_webhook_event_from_the_spec(client):
    from .helpers import load_spec

    page = client.get("/docs/api")
    assert page.status_code == 200 and 'id="webhook-events"' in page.text
    documented = load_spec()["x-webhooks"]
    assert set(documented) == {*service.EVENT_TYPES, service.PING}
    for name in documented:
        assert f"<td><code>{name}</code></td>" in page.text


def test_a_pending_delivery_cannot_be_resent_and_one_test_event_is_pending_at_a_time(
    client, make_account, private_targets_allowed, app
):
    _, key = make_account(tier="pro")
    made = _post_endpoint(client, key, "http://127.0.0.1:9/hook", ["job.failed"]).json()
    first = client.post(f"/api/v1/webhook_endpoints/{made['id']}/test", headers={"x-api-key": key})
    assert first.status_code == 202
    again = [client.post(f"/api/v1/webhook_endpoints/{made['id']}/test", headers={"x-api-key": key}) for _ in range(5)]
    assert {a.status_code for a in again} == {409}
    assert again[0].json()["type"].endswith("/webhook-delivery-pending")
    with app.app_context():
        pending = db.session.get(WebhookDelivery, first.json()["id"])
        with pytest.raises(service.AlreadyPending):
            service.resend(pending)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 1


def test_the_database_holds_one_pending_test_event_per_endpoint_even_at_once(
    client, make_account, private_targets_allowed, app
):
    _, key = make_account(tier="pro")
    made = _post_endpoint(client, key, "http://127.0.0.1:9/hook", ["job.failed"]).json()
    with app.app_context():
        endpoint = db.session.get(WebhookEndpoint, made["id"])
        first = service.ping(endpoint)  # past the service's check, as a request racing another would be
        with pytest.raises(service.AlreadyPending):
            service.ping(endpoint)
        db.session.get(WebhookDelivery, first).status = DeliveryStatus.SUCCEEDED
        db.session.commit()
    # Eight clicks at once: one test event queued, seven told it is pending, none a 500.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(
                lambda _: client.post(f"/api/v1/webhook_endpoints/{made['id']}/test", headers={"x-api-key": key}),
                range(8),
            )
        )
    assert sorted(r.status_code for r in statuses) == [202] + [409] * 7
    with app.app_context():
        pending = db.session.scalars(
            sa.select(WebhookDelivery).where(WebhookDelivery.status == DeliveryStatus.PENDING)
        ).all()
        assert len(pending) == 1
        finished = db.session.get(WebhookDelivery, first)
        with pytest.raises(service.AlreadyPending):  # resending the finished one while one is pending
            service.resend(finished)
        db.session.refresh(finished)
        assert finished.status == DeliveryStatus.SUCCEEDED


def test_migration_0011_keeps_the_newest_pending_test_event_of_an_endpoint(tmp_path, redis_server):
    from flask_migrate import upgrade

    from levqor_core.app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'before-0011.db'}",
            "REDIS_URL": redis_server.url,
            "RATELIMIT_STORAGE_URI": redis_server.url,
            "SECRET_KEY": SECRET_KEY,
        }
    ).app
    with app.app_context():
        upgrade(revision="0010")
        acct = Account(email="before-0011@example.com", password_hash="x", tier="pro")
        db.session.add(acct)
        db.session.commit()
        # The endpoint's row as 0010 has it (the model has columns of later migrations).
        columns = ("id", "account_id", "url", "events_json", "sandbox", "secret_encrypted", "created_at")
        start = datetime(2026, 12, 1, tzinfo=UTC)
        endpoint = SimpleNamespace(id="we_before0011", sandbox=False)
        db.session.execute(
            sa.insert(sa.table("webhook_endpoints", *map(sa.column, columns))).values(
                id=endpoint.id,
                account_id=acct.id,
                url="http://127.0.0.1:9/hook",
                events_json='["job.succeeded"]',
                sandbox=False,
                secret_encrypted="x",
                created_at=start,
            )
        )
        db.session.commit()
        for n in range(3):  # what two clicks at once could leave before 0011
            service.ping(endpoint, now=start + timedelta(minutes=n))
        job = service._delivery(endpoint, "job.succeeded", '{"type":"job.succeeded"}', start)
        db.session.add(job)
        db.session.commit()
        job_event = job.id
        upgrade()
        rows = {d.id: d for d in db.session.scalars(sa.select(WebhookDelivery))}
        pings = sorted((d for d in rows.values() if d.event_type == service.PING), key=lambda d: d.created_at)
        assert [d.status for d in pings] == ["failed", "failed", "pending"]
        assert pings[0].last_error == "superseded by a newer test event"
        assert rows[job_event].status == DeliveryStatus.PENDING  # other events untouched
        with pytest.raises(service.AlreadyPending):  # SQLite holds the index too
            service.ping(endpoint)
