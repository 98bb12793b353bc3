"""Billing: catalogue sync, Checkout, the customer portal and signed Stripe webhooks.

The real `stripe` client talks to tests/fakes/stripe_server.py over HTTP, and webhook events
are signed the way Stripe signs them.
"""

import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy as sa

from levqor_core import billing
from levqor_core.accounts import service as accounts
from levqor_core.accounts.models import Account
from levqor_core.billing.models import StripeEvent
from levqor_core.extensions import db
from levqor_core.ops import periodic

from .conftest import PASSWORD, csrf_from
from .fakes.stripe_server import FakeStripe

WEBHOOK_SECRET = "whsec_test_" + "a1" * 16
LOOKUP = {
    "sandbox": "levqor_developer_sandbox_monthly",
    "pro": "levqor_developer_pro_monthly",
    "enterprise": "levqor_developer_enterprise_monthly",
}


@pytest.fixture
def fake(app, monkeypatch):
    with FakeStripe() as server:
        monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_levqor")
        monkeypatch.setitem(app.config, "STRIPE_API_BASE", server.url)
        monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        yield server


def sync(app):
    return app.test_cli_runner().invoke(args=["billing", "sync-products"])


@pytest.fixture
def catalogue(app, fake):
    result = sync(app)
    assert result.exit_code == 0, result.output
    return fake


# -- webhook helpers ----------------------------------------------------------------------------


def sign(payload: str, secret: str = WEBHOOK_SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(type_: str, obj: dict, created: int, event_id: str | None = None) -> dict:
    return {
        "id": event_id or "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def deliver(client, evt: dict | str, signature: str | None = "sign"):
    payload = evt if isinstance(evt, str) else json.dumps(evt)
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if signature == "sign":
        signature = sign(payload)
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/api/billing/webhook", content=payload.encode(), headers=headers)


def state(app, account_id: int) -> dict:
    with app.app_context():
        a = db.session.get(Account, account_id)
        return {
            "tier": a.tier,
            "period_end": a.period_end,
            "status": a.subscription_status,
            "subscription": a.stripe_subscription_id,
            "downgrade_at": a.downgrade_at,
            "payment_failed_at": a.payment_failed_at,
        }


def account_id_of(app, email: str) -> int:
    with app.app_context():
        return accounts.by_email(email).id


class Subscriber:
    """A signed-up developer with an API key who goes through Checkout."""

    def __init__(self, portal, app, fake):
        self.dev = portal().sign_up()
        self.key = self.dev.new_key().json()["key"]
        self.app, self.fake = app, fake
        self.id = account_id_of(app, self.dev.email)
        now = int(time.time())
        self.period = (now - 86400, now + 29 * 86400)

    def checkout(self, tier: str) -> str:
        response = self.dev.client.post(
            "/api/billing/checkout", json={"tier": tier}, headers={"X-CSRFToken": self.dev.csrf}
        )
        assert response.status_code == 200, response.text
        return response.json()["url"].rsplit("/", 1)[-1]

    def subscribe(self, client, tier: str, created: int | None = None) -> dict:
        """Checkout, payment, and the two events Stripe sends for it."""
        session, subscription = self.fake.complete_checkout(
            self.checkout(tier), period_start=self.period[0], period_end=self.period[1]
        )
        created = created or int(time.time()) - 60
        for evt in (
            event("checkout.session.completed", session, created),
            event("customer.subscription.created", subscription, created),
        ):
            response = deliver(client, evt)
            assert response.status_code == 200, response.text
            assert response.json() == {"received": True, "outcome": "applied"}
        return subscription

    def usage(self, client):
        response = client.get("/api/usage", headers={"x-api-key": self.key})
        assert response.status_code == 200, response.text
        return response.json()

    def v1_limit(self, client) -> str:
        response = client.get("/api/v1/workflows", headers={"x-api-key": self.key})
        assert response.status_code == 200, response.text
        return response.headers["X-RateLimit-Limit"]


@pytest.fixture
def subscriber(portal, app, catalogue):
    return Subscriber(portal, app, catalogue)


# -- catalogue ----------------------------------------------------------------------------------


def test_catalogue_sync_creates_products_and_prices_then_changes_nothing(app, fake):
    first = sync(app)
    assert first.exit_code == 0, first.output
    names = sorted(p["name"] for p in fake.products.values())
    assert names == ["Developer – Enterprise ($199/mo)", "Developer – Pro ($19/mo)", "Developer – Sandbox (Free)"]
    prices = {p["lookup_key"]: p for p in fake.prices.values()}
    assert set(prices) == set(LOOKUP.values())
    for tier, amount in (("sandbox", 0), ("pro", 1900), ("enterprise", 19900)):
        price = prices[LOOKUP[tier]]
        assert (price["unit_amount"], price["currency"], price["active"]) == (amount, "usd", True)
        assert price["recurring"]["interval"] == "month" and price["recurring"]["interval_count"] == 1
        assert fake.products[price["product"]]["metadata"]["levqor_tier"] == tier

    writes = len(fake.mutations())
    second = sync(app)
    assert second.exit_code == 0, second.output
    assert "nothing changed" in second.output
    assert len(fake.mutations()) == writes  # read-only second run
    assert len(fake.products) == 3 and len(fake.prices) == 3


def test_catalogue_sync_moves_the_lookup_key_to_a_new_price_when_the_amount_changed(app, catalogue):
    old = next(p for p in catalogue.prices.values() if p["lookup_key"] == LOOKUP["pro"])
    old["unit_amount"] = old["unit_amount_decimal"] = 1500  # as if the catalogue held an older price
    catalogue.products[old["product"]]["name"] = "Pro (old name)"

    result = sync(app)
    assert result.exit_code == 0, result.output
    current = next(p for p in catalogue.prices.values() if p["lookup_key"] == LOOKUP["pro"])
    assert current["id"] != old["id"] and current["unit_amount"] == 1900 and current["active"]
    assert old["lookup_key"] is None and old["active"] is False
    assert catalogue.products[old["product"]]["name"] == "Developer – Pro ($19/mo)"
    assert len(catalogue.prices) == 4 and len(catalogue.products) == 3

    writes = len(catalogue.mutations())
    assert "nothing changed" in sync(app).output
    assert len(catalogue.mutations()) == writes


def test_catalogue_sync_without_a_stripe_key_says_so(app, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "")
    result = sync(app)
    assert result.exit_code == 1
    assert "STRIPE_SECRET_KEY" in result.output


def test_catalogue_sync_reports_a_refused_key_without_a_traceback(app, fake, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "pk_live_wrong")
    result = sync(app)
    assert result.exit_code == 1
    assert "Invalid API Key" in result.output and "Traceback" not in result.output


# -- checkout and customer portal (API) ------------------------------------------------------------


def test_checkout_creates_a_subscription_session_tied_to_the_account(portal, app, catalogue):
    dev = portal().sign_up()
    account_id = account_id_of(app, dev.email)
    response = dev.client.post("/api/billing/checkout", json={"tier": "pro"}, headers={"X-CSRFToken": dev.csrf})
    assert response.status_code == 200, response.text
    url = response.json()["url"]
    assert url.startswith("https://checkout.stripe.com/")
    session = catalogue.checkout_sessions[url.rsplit("/", 1)[-1]]
    assert session["mode"] == "subscription"
    assert session["client_reference_id"] == str(account_id)
    assert session["_subscription_data"]["metadata"]["account_id"] == str(account_id)
    pro_price = next(p for p in catalogue.prices.values() if p["lookup_key"] == LOOKUP["pro"])
    assert session["_line_items"] == [{"price": pro_price["id"], "quantity": 1}]
    customer = catalogue.customers[session["customer"]]
    assert customer["email"] == dev.email and customer["metadata"]["account_id"] == str(account_id)

    again = dev.client.post("/api/billing/checkout", json={"tier": "enterprise"}, headers={"X-CSRFToken": dev.csrf})
    assert again.status_code == 200
    assert catalogue.checkout_sessions[again.json()["url"].rsplit("/", 1)[-1]]["customer"] == session["customer"]
    assert len(catalogue.customers) == 1  # the customer is reused


def test_deleting_an_account_expires_its_open_checkouts_so_none_can_be_paid_later(portal, app, catalogue):
    """A checkout left open in another tab, paid after the account is gone, would start a
    subscription that nothing cancels."""
    dev, other = portal().sign_up(), portal().sign_up()
    urls = [
        c.client.post("/api/billing/checkout", json={"tier": tier}, headers={"X-CSRFToken": c.csrf}).json()["url"]
        for c, tier in ((dev, "pro"), (dev, "enterprise"), (other, "pro"))
    ]
    leaving, leaving_too, staying = (url.rsplit("/", 1)[-1] for url in urls)

    page = dev.client.get("/developer/account").text
    deleted = dev.client.post("/developer/account/delete", data={"password": PASSWORD, "csrf_token": csrf_from(page)})
    assert deleted.status_code == 302
    status = {sid: catalogue.checkout_sessions[sid]["status"] for sid in (leaving, leaving_too, staying)}
    assert status == {leaving: "expired", leaving_too: "expired", staying: "open"}  # another account's stays
    with pytest.raises(ValueError, match="cannot be paid"):
        catalogue.complete_checkout(leaving, period_start=0, period_end=1)


@pytest.mark.parametrize("body", [{"tier": "sandbox"}, {"tier": "gold"}, {}, {"tier": "pro", "extra": 1}])
def test_checkout_refuses_a_plan_that_cannot_be_bought(portal, catalogue, body):
    dev = portal().sign_up()
    response = dev.client.post("/api/billing/checkout", json=body, headers={"X-CSRFToken": dev.csrf})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert not catalogue.checkout_sessions


def test_checkout_needs_a_portal_session_and_csrf(client, portal, subscriber, catalogue):
    assert client.post("/api/billing/checkout", json={"tier": "pro"}).status_code == 401
    dev = portal().sign_up()
    refused = dev.client.post("/api/billing/checkout", json={"tier": "pro"})
    assert refused.status_code == 403 and refused.json()["type"].endswith("/csrf-failed")
    with_key = client.post("/api/billing/checkout", json={"tier": "pro"}, headers={"x-api-key": subscriber.key})
    assert with_key.status_code == 401
    assert not catalogue.checkout_sessions


def test_checkout_without_stripe_configured_is_503(portal, app, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "")
    dev = portal().sign_up()
    response = dev.client.post("/api/billing/checkout", json={"tier": "pro"}, headers={"X-CSRFToken": dev.csrf})
    assert response.status_code == 503
    assert response.json()["type"].endswith("/billing-not-configured")


def test_checkout_before_the_catalogue_is_synced_is_503_not_500(portal, fake):
    dev = portal().sign_up()
    response = dev.client.post("/api/billing/checkout", json={"tier": "pro"}, headers={"X-CSRFToken": dev.csrf})
    assert response.status_code == 503 and "not for sale" in response.json()["detail"]


def test_customer_portal_is_for_subscribers_only(client, subscriber, catalogue):
    dev = subscriber.dev
    refused = dev.client.post("/api/billing/portal", headers={"X-CSRFToken": dev.csrf})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/no-billing-account")
    subscriber.subscribe(client, "pro")
    response = dev.client.post("/api/billing/portal", headers={"X-CSRFToken": dev.csrf})
    assert response.status_code == 200, response.text
    assert response.json()["url"].startswith("https://billing.stripe.com/")
    (session,) = catalogue.portal_sessions.values()
    with subscriber.app.app_context():
        assert session["customer"] == db.session.get(Account, subscriber.id).stripe_customer_id
    assert session["return_url"].endswith("/developer/billing")


def test_a_subscriber_cannot_start_a_second_checkout(client, subscriber):
    subscriber.subscribe(client, "pro")
    dev = subscriber.dev
    response = dev.client.post("/api/billing/checkout", json={"tier": "enterprise"}, headers={"X-CSRFToken": dev.csrf})
    assert response.status_code == 409 and response.json()["type"].endswith("/already-subscribed")


# -- webhooks: the tier follows the subscription ----------------------------------------------------


def test_upgrade_to_pro_sets_quota_renewal_date_and_hot_path_limit(client, subscriber):
    assert subscriber.v1_limit(client) == "1000"  # the sandbox record is now cached by the gate
    subscriber.subscribe(client, "pro")

    usage = subscriber.usage(client)
    assert usage["tier"] == "pro" and usage["quota"] == 10_000
    renewal = datetime.fromtimestamp(subscriber.period[1], UTC)
    assert datetime.fromisoformat(usage["resets_at"]) == renewal
    assert datetime.fromisoformat(usage["period_start"]) == datetime.fromtimestamp(subscriber.period[0], UTC)
    assert subscriber.v1_limit(client) == "10000"  # enforced at once, no stale cache


def test_enterprise_subscription_makes_the_quota_unlimited(client, subscriber):
    subscriber.v1_limit(client)
    subscriber.subscribe(client, "enterprise")
    usage = subscriber.usage(client)
    assert usage["tier"] == "enterprise" and usage["quota"] is None and usage["remaining"] is None
    assert subscriber.v1_limit(client) == "250"  # unlimited quota: the header shows the burst limit


def test_deleted_subscription_returns_the_account_to_sandbox(client, subscriber, catalogue):
    subscription = subscriber.subscribe(client, "pro")
    assert subscriber.v1_limit(client) == "10000"
    ended = catalogue.change_subscription(subscription["id"], status="canceled", ended_at=int(time.time()))
    response = deliver(client, event("customer.subscription.deleted", ended, int(time.time())))
    assert response.status_code == 200 and response.json()["outcome"] == "applied"

    usage = subscriber.usage(client)
    assert usage["tier"] == "sandbox" and usage["quota"] == 1000
    assert datetime.fromisoformat(usage["resets_at"]).day == 1  # back on the calendar month
    assert subscriber.v1_limit(client) == "1000"


def test_subscription_statuses_are_stored_as_stripes_bare_strings(client, subscriber, catalogue):
    """SubscriptionStatus is a str Enum: the column keeps the values it held before there was one."""
    subscription = subscriber.subscribe(client, "pro")
    ended = catalogue.change_subscription(subscription["id"], status="canceled", ended_at=int(time.time()))
    deliver(client, event("customer.subscription.deleted", ended, int(time.time())))
    with subscriber.app.app_context():
        stored = db.session.execute(
            sa.text("SELECT subscription_status FROM accounts WHERE id = :id"), {"id": subscriber.id}
        ).scalar_one()
    assert stored == "canceled" and type(stored) is str
    assert {status.value for status in billing.SubscriptionStatus} == {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "unpaid",
        "canceled",
        "paused",
    }


def test_plan_change_in_the_customer_portal_moves_the_tier(client, subscriber, catalogue):
    subscription = subscriber.subscribe(client, "pro")
    changed = catalogue.change_subscription(subscription["id"], lookup_key=LOOKUP["enterprise"])
    assert deliver(client, event("customer.subscription.updated", changed, int(time.time()))).status_code == 200
    assert subscriber.usage(client)["quota"] is None


def test_subscription_events_arriving_before_checkout_completed_still_apply(client, subscriber, catalogue):
    session, subscription = catalogue.complete_checkout(
        subscriber.checkout("pro"), period_start=subscriber.period[0], period_end=subscriber.period[1]
    )
    now = int(time.time())
    assert deliver(client, event("customer.subscription.created", subscription, now)).json()["outcome"] == "applied"
    assert deliver(client, event("checkout.session.completed", session, now - 1)).json()["outcome"] == "applied"
    assert state(subscriber.app, subscriber.id)["tier"] == "pro"


# -- webhooks: idempotent and order-safe -------------------------------------------------------------


def test_a_replayed_event_is_applied_once(client, subscriber, catalogue):
    subscription = subscriber.subscribe(client, "pro")
    now = int(time.time())
    ended = catalogue.change_subscription(subscription["id"], status="canceled")
    deleted = event("customer.subscription.deleted", ended, now)
    assert deliver(client, deleted).json()["outcome"] == "applied"

    # The customer re-subscribes; a late redelivery of the deletion must not undo it.
    dev = subscriber.dev
    session, again = catalogue.complete_checkout(
        subscriber.checkout("pro"), period_start=subscriber.period[0], period_end=subscriber.period[1]
    )
    assert deliver(client, event("customer.subscription.created", again, now + 5)).json()["outcome"] == "applied"
    replay = deliver(client, deleted)
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    assert state(subscriber.app, subscriber.id)["tier"] == "pro"
    with subscriber.app.app_context():
        assert (
            db.session.scalar(
                sa.select(sa.func.count()).select_from(StripeEvent).where(StripeEvent.id == deleted["id"])
            )
            == 1
        )
    assert dev.client.get("/developer/billing").status_code == 200


def test_concurrent_deliveries_of_one_event_apply_it_once(cx, subscriber, catalogue):
    subscriber.subscribe(cx.test_client(), "pro")
    failed = event(
        "invoice.payment_failed",
        {"id": "in_1", "object": "invoice", "customer": catalogue.checkout_sessions.popitem()[1]["customer"]},
        int(time.time()),
    )
    outcomes, barrier = [], threading.Barrier(6)

    def send():
        client = cx.test_client()
        barrier.wait()
        outcomes.append(deliver(client, failed).json()["outcome"])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["applied"] + ["duplicate"] * 5


def test_an_older_event_never_overwrites_newer_state(client, subscriber, catalogue):
    subscription = subscriber.subscribe(client, "pro", created=int(time.time()) - 300)
    base = int(time.time()) - 200
    enterprise = catalogue.change_subscription(subscription["id"], lookup_key=LOOKUP["enterprise"])
    pro_again = dict(enterprise, items={**enterprise["items"], "data": [dict(i) for i in enterprise["items"]["data"]]})
    pro_again["items"]["data"][0]["price"] = dict(pro_again["items"]["data"][0]["price"], lookup_key=LOOKUP["pro"])

    assert deliver(client, event("customer.subscription.updated", enterprise, base + 20)).json()["outcome"] == "applied"
    late = deliver(client, event("customer.subscription.updated", pro_again, base + 10))
    assert late.status_code == 200 and late.json()["outcome"] == "stale"
    assert state(subscriber.app, subscriber.id)["tier"] == "enterprise"

    ended = catalogue.change_subscription(subscription["id"], status="canceled")
    assert deliver(client, event("customer.subscription.deleted", ended, base + 30)).json()["outcome"] == "applied"
    assert deliver(client, event("customer.subscription.updated", enterprise, base + 25)).json()["outcome"] == "stale"
    # Same second as the deletion: a deletion outranks an update.
    assert deliver(client, event("customer.subscription.updated", enterprise, base + 30)).json()["outcome"] == "stale"
    assert state(subscriber.app, subscriber.id)["tier"] == "sandbox"
    assert subscriber.usage(client)["quota"] == 1000


def test_a_deletion_of_an_old_subscription_does_not_end_the_current_one(client, subscriber, catalogue):
    first = subscriber.subscribe(client, "pro", created=int(time.time()) - 300)
    with subscriber.app.app_context():
        old = dict(first, id="sub_from_last_year", status="canceled")
    response = deliver(client, event("customer.subscription.deleted", old, int(time.time())))
    assert response.json()["outcome"] == "ignored"
    assert state(subscriber.app, subscriber.id)["tier"] == "pro"


# -- webhooks: refused deliveries ----------------------------------------------------------------------


def _bad_deliveries(subscription: dict) -> list[tuple[str, object, str]]:
    evt = event("customer.subscription.deleted", dict(subscription, status="canceled"), int(time.time()))
    payload = json.dumps(evt)
    fresh = int(time.time())
    return [
        ("unsigned", (payload, None), "invalid-webhook-signature"),
        ("wrong secret", (payload, sign(payload, secret="whsec_not_ours")), "invalid-webhook-signature"),
        ("tampered body", (payload.replace("canceled", "cancelled"), sign(payload)), "invalid-webhook-signature"),
        ("stale timestamp", (payload, sign(payload, t=fresh - 3600)), "invalid-webhook-signature"),
        ("garbage header", (payload, "not-a-signature"), "invalid-webhook-signature"),
        ("wrong scheme", (payload, sign(payload).replace("v1=", "v0=")), "invalid-webhook-signature"),
        ("not json", ("{not json", sign("{not json")), "bad-request"),
        ("json array", ("[1, 2]", sign("[1, 2]")), "bad-request"),
        ("no data", (json.dumps({**evt, "data": None}), "sign"), "invalid-webhook-event"),
        ("no created", (json.dumps({**evt, "created": "yesterday"}), "sign"), "invalid-webhook-event"),
        (
            "items not a list",
            (
                json.dumps(
                    {**evt, "type": "customer.subscription.updated", "data": {"object": {**subscription, "items": 5}}}
                ),
                "sign",
            ),
            "invalid-webhook-event",
        ),
        (
            "period missing",
            (
                json.dumps(
                    {
                        **evt,
                        "type": "customer.subscription.updated",
                        "data": {"object": {**subscription, "items": {"data": [{"price": {}}]}}},
                    }
                ),
                "sign",
            ),
            "invalid-webhook-event",
        ),
        ("id not a string", (json.dumps({**evt, "id": 42}), "sign"), "invalid-webhook-event"),
    ]


def test_unsigned_wrongly_signed_stale_and_malformed_events_are_400_and_change_nothing(client, subscriber, app):
    subscription = subscriber.subscribe(client, "pro")
    before = state(app, subscriber.id)
    for name, (payload, signature), slug in _bad_deliveries(subscription):
        response = deliver(client, payload, signature)
        assert response.status_code == 400, (name, response.text)
        assert response.headers["content-type"] == "application/problem+json", name
        assert response.json()["type"].endswith("/" + slug), (name, response.json())
        assert state(app, subscriber.id) == before, name
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(StripeEvent)) == 2  # only the checkout's


def test_stale_signature_says_why(client, fake):
    payload = json.dumps(event("customer.subscription.deleted", {"id": "sub_x"}, int(time.time())))
    response = deliver(client, payload, sign(payload, t=int(time.time()) - 301 - 60))
    assert response.status_code == 400 and "too old" in response.json()["detail"]


def test_unknown_event_types_are_acknowledged_and_ignored(client, fake):
    response = deliver(client, event("charge.refunded", {"id": "ch_1", "object": "charge"}, int(time.time())))
    assert response.status_code == 200 and response.json() == {"received": True, "outcome": "ignored"}


def test_events_for_customers_we_do_not_know_are_ignored(client, catalogue):
    stranger = {
        "id": "sub_x",
        "status": "active",
        "customer": "cus_someone_else",
        "metadata": {},
        "items": {"data": []},
    }
    response = deliver(client, event("customer.subscription.deleted", stranger, int(time.time())))
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"


def test_webhook_without_a_secret_configured_is_503(client, app, monkeypatch):
    monkeypatch.setitem(app.config, "STRIPE_WEBHOOK_SECRET", "")
    payload = json.dumps(event("charge.refunded", {"id": "ch_1"}, int(time.time())))
    response = deliver(client, payload, sign(payload))
    assert response.status_code == 503 and response.json()["type"].endswith("/billing-not-configured")


# -- payment problems and cancellation -------------------------------------------------------------------


def test_failed_payment_is_shown_until_the_subscription_is_paid_again(client, subscriber, catalogue):
    subscription = subscriber.subscribe(client, "pro")
    customer = subscription["customer"]
    now = int(time.time())
    invoice = {
        "id": "in_1",
        "object": "invoice",
        "customer": customer,
        "parent": {"subscription_details": {"subscription": subscription["id"], "metadata": {}}},
    }
    assert deliver(client, event("invoice.payment_failed", invoice, now)).json()["outcome"] == "applied"
    past_due = catalogue.change_subscription(subscription["id"], status="past_due")
    deliver(client, event("customer.subscription.updated", past_due, now + 1))
    page = subscriber.dev.client.get("/developer/billing")
    assert page.status_code == 200 and "Your last payment failed" in page.text
    assert state(subscriber.app, subscriber.id)["tier"] == "pro"  # Stripe is still retrying

    paid = catalogue.change_subscription(subscription["id"], status="active")
    deliver(client, event("customer.subscription.updated", paid, now + 2))
    assert "payment failed" not in subscriber.dev.client.get("/developer/billing").text
    late_failure = deliver(client, event("invoice.payment_failed", dict(invoice, id="in_0"), now - 5))
    assert late_failure.json()["outcome"] == "stale"
    assert state(subscriber.app, subscriber.id)["payment_failed_at"] is None


def test_cancel_at_period_end_keeps_the_plan_until_then(client, subscriber, catalogue):
    subscription = subscriber.subscribe(client, "pro")
    cancelling = catalogue.change_subscription(subscription["id"], cancel_at_period_end=True)
    deliver(client, event("customer.subscription.updated", cancelling, int(time.time())))
    s = state(subscriber.app, subscriber.id)
    assert s["tier"] == "pro" and s["downgrade_at"] == datetime.fromtimestamp(subscriber.period[1], UTC)
    page = subscriber.dev.client.get("/developer/billing").text
    assert 'id="ends-at"' in page and 'id="renews-at"' not in page


def test_unpaid_subscription_falls_back_to_sandbox_at_period_end(client, subscriber, catalogue, app):
    subscription = subscriber.subscribe(client, "pro")
    unpaid = catalogue.change_subscription(subscription["id"], status="unpaid")
    deliver(client, event("customer.subscription.updated", unpaid, int(time.time())))
    assert state(app, subscriber.id)["tier"] == "pro"
    assert "did not go through" in subscriber.dev.client.get("/developer/billing").text

    period_end = datetime.fromtimestamp(subscriber.period[1], UTC)
    with app.app_context():
        assert billing.downgrade_lapsed(period_end - timedelta(seconds=1)) == 0
        assert billing.downgrade_lapsed(period_end) == 1
    assert state(app, subscriber.id)["tier"] == "sandbox"
    assert subscriber.v1_limit(client) == "1000"


def test_the_nightly_billing_job_forgets_event_ids_older_than_90_days(client, subscriber, app):
    subscriber.subscribe(client, "pro")
    old, recent = datetime.now(UTC) - timedelta(days=91), datetime.now(UTC) - timedelta(days=89)
    with app.app_context():
        for event_id, received in (("evt_old", old), ("evt_recent", recent)):
            db.session.add(
                StripeEvent(id=event_id, type="ping", outcome="ignored", created=received, received_at=received)
            )
        db.session.commit()
        delivered = set(db.session.scalars(sa.select(StripeEvent.id)).all()) - {"evt_old", "evt_recent"}
        assert delivered  # the subscription's own events, received just now

        assert periodic.run("billing-downgrade")["events_pruned"] == 1
        assert set(db.session.scalars(sa.select(StripeEvent.id)).all()) == delivered | {"evt_recent"}
    assert state(app, subscriber.id)["tier"] == "pro"


# -- portal pages ----------------------------------------------------------------------------------------


def test_portal_upgrade_redirects_to_stripe_checkout(portal, catalogue):
    dev = portal().sign_up()
    response = dev.client.post("/billing/upgrade", data={"csrf_token": dev.csrf, "tier": "pro"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("https://checkout.stripe.com/c/pay/cs_test_")


def test_portal_upgrade_explains_refusals(portal, app, catalogue, monkeypatch):
    dev = portal().sign_up()
    wrong = dev.client.post("/billing/upgrade", data={"csrf_token": dev.csrf, "tier": "platinum"})
    assert wrong.status_code == 400 and "Choose a paid plan" in wrong.text
    no_csrf = dev.client.post("/billing/upgrade", data={"tier": "pro"})
    assert no_csrf.status_code == 400 and "expired" in no_csrf.text
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "")
    unconfigured = dev.client.post("/billing/upgrade", data={"csrf_token": dev.csrf, "tier": "pro"})
    assert unconfigured.status_code == 503 and "not set up" in unconfigured.text
    assert not catalogue.checkout_sessions


def _form_posting_to(html: str, action: str) -> dict:
    """The hidden fields of the page's form that posts to action, as a browser would submit them."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}">(.*?)</form>', html, re.S)
    assert form, f"no form posting to {action}"
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))


def test_a_visitor_who_picks_a_plan_signs_up_and_lands_on_a_checkout_confirm_page(cx, app, catalogue):
    browser = cx.test_client(follow_redirects=False)
    pricing = browser.get("/pricing").text
    choice = _form_posting_to(pricing.split('id="tier-pro"', 1)[1], "/billing/upgrade")
    assert choice["tier"] == "pro"

    to_login = browser.post("/billing/upgrade", data=choice)
    assert to_login.status_code == 303
    login_url = to_login.headers["location"]
    assert urlsplit(login_url).path == "/login"
    next_url = parse_qs(urlsplit(login_url).query)["next"][0]
    assert next_url == "/billing/upgrade?tier=pro"
    assert "upgrade to Pro" in browser.get(login_url).text

    signup_url = "/signup?" + urlencode({"next": next_url})
    token = csrf_from(browser.get(signup_url).text)
    email = "visitor@example.com"
    signed_up = browser.post(signup_url, data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert signed_up.status_code == 302  # "check your email": its log-in link keeps the plan
    check_email = browser.get(signed_up.headers["location"]).text
    login_href = html.unescape(re.search(r'<a href="([^"]+)" id="check-email-login">', check_email).group(1))
    token = csrf_from(browser.get(login_href).text)
    logged_in = browser.post(login_href, data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert logged_in.status_code == 302 and logged_in.headers["location"] == next_url

    confirm = browser.get(next_url)
    assert confirm.status_code == 200, confirm.text
    assert confirm.headers["content-type"].startswith("text/html")
    assert "<h1>Upgrade to Pro</h1>" in confirm.text and "$19/month" in confirm.text
    assert not catalogue.checkout_sessions  # the GET only asks
    proceed = _form_posting_to(confirm.text, "/billing/upgrade")
    assert proceed["tier"] == "pro" and proceed["csrf_token"]

    checkout = browser.post("/billing/upgrade", data=proceed)
    assert checkout.status_code == 303
    session_id = checkout.headers["location"].removeprefix("https://checkout.stripe.com/c/pay/")
    session = catalogue.checkout_sessions[session_id]
    assert session["metadata"] == {"account_id": str(account_id_of(app, email)), "tier": "pro"}


def test_upgrade_confirm_page_without_a_paid_plan_or_with_a_subscription(client, subscriber, app, monkeypatch):
    dev = subscriber.dev.client
    for query in ("", "?", "?tier=sandbox", "?tier=platinum"):
        response = dev.get("/billing/upgrade" + query)
        assert response.status_code == 302 and response.headers["location"] == "/developer/billing", query
    secret_key = app.config["STRIPE_SECRET_KEY"]
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "")
    unconfigured = dev.get("/billing/upgrade?tier=enterprise").text
    assert "not available on this server" in unconfigured and "Continue to Stripe Checkout" not in unconfigured
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", secret_key)
    subscriber.subscribe(client, "pro")
    page = dev.get("/billing/upgrade?tier=enterprise").text
    assert "already have a subscription" in page and "Continue to Stripe Checkout" not in page
    assert _form_posting_to(page, "/billing/manage")


def test_portal_billing_pages_need_a_login(client):
    assert client.get("/developer/billing").status_code == 302
    assert "/login" in client.get("/developer/billing").headers["location"]
    assert client.post("/billing/upgrade", data={"tier": "pro"}).status_code == 400  # no CSRF token
    confirm = client.get("/billing/upgrade?tier=pro")
    assert confirm.status_code == 302 and urlsplit(confirm.headers["location"]).path == "/login"
    assert parse_qs(urlsplit(confirm.headers["location"]).query)["next"] == ["/billing/upgrade?tier=pro"]


def test_billing_page_shows_plan_renewal_and_manage_link(client, subscriber):
    page = subscriber.dev.client.get("/developer/billing").text
    assert 'id="plan-name">Sandbox<' in page and "Manage billing" not in page
    subscriber.subscribe(client, "pro")
    page = subscriber.dev.client.get("/developer/billing?checkout=success").text
    assert 'id="plan-name">Pro<' in page
    renewal = datetime.fromtimestamp(subscriber.period[1], UTC)
    assert f'datetime="{renewal.isoformat()}"' in page
    assert "Manage billing" in page and "Thanks!" in page
    manage = subscriber.dev.client.post("/billing/manage", data={"csrf_token": subscriber.dev.csrf})
    assert manage.status_code == 303 and manage.headers["location"].startswith("https://billing.stripe.com/")


def test_manage_billing_without_a_subscription_explains(portal, catalogue):
    dev = portal().sign_up()
    response = dev.client.post("/billing/manage", data={"csrf_token": dev.csrf})
    assert response.status_code == 409 and "upgrade first" in response.text


def test_older_api_versions_with_the_period_on_the_subscription_still_work(client, subscriber, catalogue):
    session, subscription = catalogue.complete_checkout(
        subscriber.checkout("pro"), period_start=subscriber.period[0], period_end=subscriber.period[1]
    )
    for item in subscription["items"]["data"]:
        del item["current_period_start"], item["current_period_end"]
    subscription.update(current_period_start=subscriber.period[0], current_period_end=subscriber.period[1])
    assert deliver(client, event("customer.subscription.created", subscription, int(time.time()))).status_code == 200
    usage = subscriber.usage(client)
    assert usage["quota"] == 10_000
    assert datetime.fromisoformat(usage["resets_at"]) == datetime.fromtimestamp(subscriber.period[1], UTC)


def test_a_large_stripe_event_is_accepted_while_api_bodies_stay_limited(client, fake):
    lines = [{"id": f"il_{i}", "description": "x" * 200} for i in range(600)]  # ~150 KB, over 64 KiB
    big = event("invoice.finalized", {"id": "in_big", "object": "invoice", "lines": {"data": lines}}, 1_800_000_000)
    response = deliver(client, big)
    assert response.status_code == 200 and response.json()["outcome"] == "ignored"
    too_big = client.post("/api/v1/jobs", content=b"x" * 150_000, headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413
