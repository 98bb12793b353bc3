"""Billing with Stripe: the product catalogue, Checkout, the customer portal, and the webhook
that moves accounts between tiers.

Stripe is the source of truth for subscriptions; the account row keeps what the hot path needs
(tier, subscription period) plus enough state to apply webhook events once and in order:
`stripe_events` remembers every event id applied, and `Account.subscription_event_at` holds the
`created` time of the newest subscription event applied, so a late, older event is ignored.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
import stripe
from flask import current_app
from sqlalchemy.exc import IntegrityError

from levqor_core import problems
from levqor_core.accounts.models import Account
from levqor_core.billing.models import StripeEvent
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.limits import key_cache, tiers

log = logging.getLogger(__name__)
# The library logs every request and response at INFO; our own lines say what happened.
logging.getLogger("stripe").setLevel(logging.WARNING)

CURRENCY = "usd"
# Stripe's own default: a signature older than this is refused as a possible replay.
SIGNATURE_TOLERANCE_SECONDS = 300
# Stripe retries a webhook for up to 3 days and can resend an event for 30; ids are kept past both.
EVENT_MEMORY = timedelta(days=90)
# Statuses in which the subscription pays for its tier (past_due: Stripe is still retrying).
LIVE_STATUSES = ("active", "trialing", "past_due")
ENDED_STATUSES = ("canceled", "incomplete_expired", "paused")
# Several subscription events can share one `created` second; this orders them.
_EVENT_RANK = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.deleted": 2,
}


# -- problems -----------------------------------------------------------------------------------


class BillingNotConfigured(problems.ServiceUnavailable):
    slug, title = "billing-not-configured", "Billing is not configured"


class PaymentProviderError(problems.Problem):
    status, slug, title = 502, "payment-provider-error", "The payment provider did not answer as expected"


class UnknownPlan(problems.BadRequest):
    slug, title = "unknown-plan", "Unknown plan"


class AlreadySubscribed(problems.Conflict):
    slug, title = "already-subscribed", "Already subscribed"


class NoBillingAccount(problems.Conflict):
    slug, title = "no-billing-account", "No paid plan to manage"


class InvalidSignature(problems.BadRequest):
    slug, title = "invalid-webhook-signature", "Invalid webhook signature"


class InvalidEvent(problems.BadRequest):
    slug, title = "invalid-webhook-event", "Invalid webhook event"


# -- the Stripe client --------------------------------------------------------------------------


def is_configured() -> bool:
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def client() -> stripe.StripeClient:
    """A client for the configured Stripe account (STRIPE_API_BASE may point at a local fake)."""
    key = current_app.config.get("STRIPE_SECRET_KEY")
    if not key:
        raise BillingNotConfigured("Billing is not set up on this server (STRIPE_SECRET_KEY is unset).")
    base = current_app.config.get("STRIPE_API_BASE") or stripe.DEFAULT_API_BASE
    cached = current_app.extensions.get("levqor.stripe")
    if cached and cached[0] == (key, base):
        return cached[1]  # shared: its HTTP sessions are per thread, and connections are reused
    sc = stripe.StripeClient(
        key,
        base_addresses={"api": base},
        # The library retries network errors and 409/429/5xx with idempotency keys it generates.
        max_network_retries=2,
        http_client=stripe.RequestsClient(timeout=(5, 30)),
    )
    current_app.extensions["levqor.stripe"] = ((key, base), sc)
    return sc


def _provider_error(err: stripe.StripeError) -> PaymentProviderError:
    log.warning("stripe call failed: %s (code=%s, status=%s)", err.user_message or err, err.code, err.http_status)
    return PaymentProviderError("Stripe refused or failed the request; try again in a minute.")


def _base_url() -> str:
    return current_app.config.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")


# -- catalogue ----------------------------------------------------------------------------------


def product_id(tier: tiers.Tier) -> str:
    return f"levqor_developer_{tier.name}"


def product_name(tier: tiers.Tier) -> str:
    price = "Free" if tier.price_usd == 0 else f"${tier.price_usd}/mo"
    return f"Developer – {tier.label} ({price})"


def _product_fields(tier: tiers.Tier) -> dict:
    return {
        "name": product_name(tier),
        "description": (
            f"Levqor API: {tier.quota_label} calls, {tier.burst_per_second}/s burst, {tier.support} support."
        ),
        "metadata": {"levqor_tier": tier.name},
    }


def _price_matches(price: dict, tier: tiers.Tier, product: str) -> bool:
    recurring = price.get("recurring") or {}
    price_product = price["product"]["id"] if isinstance(price["product"], dict) else price["product"]
    return (
        price_product == product
        and price["unit_amount"] == tier.price_usd * 100
        and price["currency"] == CURRENCY
        and recurring.get("interval") == "month"
        and recurring.get("interval_count") == 1
    )


def sync_catalogue() -> list[str]:
    """Create or update the tier products and monthly prices; returns what changed (empty: nothing).

    Prices are found by their lookup keys. A price's amount cannot change in Stripe, so a new
    amount means a new price that takes the lookup key over (transfer_lookup_key); the old
    price is archived and keeps billing the subscriptions already on it."""
    sc = client()
    changes: list[str] = []
    wanted = list(tiers.TIERS.values())
    listed = sc.v1.prices.list(
        params={"lookup_keys": [t.stripe_lookup_key for t in wanted], "expand": ["data.product"], "limit": 100}
    )
    by_key = {p["lookup_key"]: p for p in (obj.to_dict() for obj in listed.data)}
    for tier in wanted:
        price = by_key.get(tier.stripe_lookup_key)
        product = price["product"] if price and isinstance(price["product"], dict) else None
        if product is None or product.get("deleted"):
            product = _retrieve_product(sc, product_id(tier))
        fields = _product_fields(tier)
        if product is None:
            product = sc.v1.products.create(params={"id": product_id(tier), **fields}).to_dict()
            changes.append(f"created product {product['id']} ({fields['name']})")
        else:
            stale = {k: v for k, v in fields.items() if k != "metadata" and product.get(k) != v}
            if any(product.get("metadata", {}).get(k) != v for k, v in fields["metadata"].items()):
                stale["metadata"] = fields["metadata"]
            if not product.get("active", True):
                stale["active"] = True
            if stale:
                product = sc.v1.products.update(product["id"], params=stale).to_dict()
                changes.append(f"updated product {product['id']} ({', '.join(sorted(stale))})")

        if price and _price_matches(price, tier, product["id"]):
            if not price["active"]:
                sc.v1.prices.update(price["id"], params={"active": True})
                changes.append(f"reactivated price {price['id']} ({tier.stripe_lookup_key})")
            continue
        created = sc.v1.prices.create(
            params={
                "product": product["id"],
                "currency": CURRENCY,
                "unit_amount": tier.price_usd * 100,
                "recurring": {"interval": "month", "interval_count": 1},
                "lookup_key": tier.stripe_lookup_key,
                "transfer_lookup_key": price is not None,
                "nickname": f"{tier.label} monthly",
                "metadata": {"levqor_tier": tier.name},
            }
        )
        changes.append(f"created price {created.id} ({tier.stripe_lookup_key}, ${tier.price_usd}/month)")
        if price and price["active"]:
            sc.v1.prices.update(price["id"], params={"active": False})
            changes.append(f"archived price {price['id']}")
    return changes


def _retrieve_product(sc: stripe.StripeClient, pid: str) -> dict | None:
    try:
        return sc.v1.products.retrieve(pid).to_dict()
    except stripe.InvalidRequestError as err:
        if err.code == "resource_missing":
            return None
        raise


def _price_id(sc: stripe.StripeClient, tier: tiers.Tier) -> str:
    listed = sc.v1.prices.list(params={"lookup_keys": [tier.stripe_lookup_key], "active": True, "limit": 1})
    if not listed.data:
        log.error(
            "no active Stripe price with lookup key %s; run `flask billing sync-products`", tier.stripe_lookup_key
        )
        raise BillingNotConfigured(f"The {tier.label} plan is not for sale yet; please try again later.")
    return listed.data[0].id


# -- checkout and the customer portal -------------------------------------------------------------


def paid_tier(name: str | None) -> tiers.Tier:
    """The paid tier a customer may buy; UnknownPlan otherwise."""
    try:
        tier = tiers.get(name or "")
    except KeyError:
        tier = None
    if tier is None or tier.price_usd == 0:
        choices = ", ".join(t.name for t in tiers.TIERS.values() if t.price_usd > 0)
        raise UnknownPlan(f"Choose a paid plan: {choices}.")
    return tier


def has_live_subscription(account: Account) -> bool:
    return bool(account.stripe_subscription_id) and account.subscription_status in (*LIVE_STATUSES, "unpaid")


def ensure_customer(sc: stripe.StripeClient, account: Account) -> str:
    """The account's Stripe customer, created once (an idempotency key covers double clicks)."""
    if account.stripe_customer_id:
        return account.stripe_customer_id
    # Unique to this account row, so a reused id in another database never replays its customer.
    stamp = hashlib.sha256(f"{account.id}|{account.email}|{account.created_at.isoformat()}".encode()).hexdigest()
    customer = sc.v1.customers.create(
        params={"email": account.email, "metadata": {"account_id": str(account.id)}},
        options={"idempotency_key": f"levqor-customer-{stamp[:32]}"},
    )
    account.stripe_customer_id = customer.id
    db.session.commit()
    return customer.id


def start_checkout(account: Account, tier_name: str | None) -> str:
    """A Stripe Checkout Session (subscription mode) for the account; returns its URL."""
    tier = paid_tier(tier_name)
    if has_live_subscription(account):
        raise AlreadySubscribed("You already have a subscription; change or cancel it with Manage billing.")
    sc = client()
    try:
        price = _price_id(sc, tier)
        customer = ensure_customer(sc, account)
        session = sc.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer,
                "client_reference_id": str(account.id),
                "line_items": [{"price": price, "quantity": 1}],
                "subscription_data": {"metadata": {"account_id": str(account.id), "tier": tier.name}},
                "metadata": {"account_id": str(account.id), "tier": tier.name},
                "success_url": f"{_base_url()}/developer/billing?checkout=success",
                "cancel_url": f"{_base_url()}/developer/billing?checkout=canceled",
            }
        )
    except stripe.StripeError as err:
        raise _provider_error(err) from None
    return session.url


def portal_url(account: Account) -> str:
    """A Stripe customer-portal session for a paying (or formerly paying) account."""
    if not account.stripe_customer_id or not account.stripe_subscription_id:
        raise NoBillingAccount("This account has no paid plan to manage; upgrade first.")
    sc = client()
    try:
        session = sc.v1.billing_portal.sessions.create(
            params={"customer": account.stripe_customer_id, "return_url": f"{_base_url()}/developer/billing"}
        )
    except stripe.StripeError as err:
        raise _provider_error(err) from None
    return session.url


def cancel_subscription(account: Account) -> bool:
    """Cancel the account's subscription at once (account deletion); False when there is none."""
    if not account.stripe_subscription_id or account.subscription_status == "canceled":
        return False
    try:
        client().v1.subscriptions.cancel(account.stripe_subscription_id)
    except stripe.StripeError as err:
        raise _provider_error(err) from None
    account.subscription_status = "canceled"
    return True


# -- what the portal shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class BillingStatus:
    tier: tiers.Tier
    status: str | None
    renews_at: datetime | None
    ends_at: datetime | None
    payment_problem: str | None
    can_manage: bool
    can_upgrade: bool


def billing_status(account: Account, now: datetime) -> BillingStatus:
    tier = tiers.get(account.tier)
    live = has_live_subscription(account)
    ends_at = account.downgrade_at if live and tier.price_usd else None
    renews_at = account.period_end if live and tier.price_usd and not ends_at else None
    problem = None
    if account.subscription_status == "unpaid" and tier.price_usd:
        problem = "Your payment did not go through; the plan returns to Sandbox at the end of the period."
    elif account.subscription_status == "unpaid":
        problem = "Your subscription is unpaid; pay the open invoice with Manage billing to restore your plan."
    elif account.payment_failed_at or account.subscription_status == "past_due":
        problem = "Your last payment failed. Update your card with Manage billing to keep your plan."
    return BillingStatus(
        tier=tier,
        status=account.subscription_status,
        renews_at=renews_at if renews_at and renews_at > now else None,
        ends_at=ends_at,
        payment_problem=problem,
        can_manage=bool(account.stripe_customer_id and account.stripe_subscription_id),
        can_upgrade=not live,
    )


# -- webhook ------------------------------------------------------------------------------------


def handle_webhook(payload: bytes, signature: str | None) -> dict:
    """Verify a Stripe webhook delivery and apply it; returns {"received": True, "outcome": ...}."""
    secret = current_app.config.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        raise BillingNotConfigured("Webhooks are not set up on this server (STRIPE_WEBHOOK_SECRET is unset).")
    if not signature:
        raise InvalidSignature("The Stripe-Signature header is missing.")
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, SIGNATURE_TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as err:
        raise InvalidSignature(_signature_reason(str(err))) from None
    except (UnicodeDecodeError, ValueError):
        raise InvalidSignature("The signature does not match the body.") from None
    try:
        event = json.loads(payload)
    except ValueError:
        raise InvalidEvent("The event body is not JSON.") from None
    return apply_event(event)


def _signature_reason(message: str) -> str:
    if "tolerance" in message:
        return "The signature's timestamp is too old (possible replay)."
    if "extract timestamp" in message or "expected scheme" in message:
        return "The Stripe-Signature header is malformed."
    return "The signature does not match the body."


def _ts(value, what: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**33:
        raise InvalidEvent(f"{what} must be a Unix timestamp.")
    return datetime.fromtimestamp(value, UTC)


def _obj(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidEvent(f"{what} must be an object.")
    return value


def _str(value, what: str, optional: bool = False) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("id"), str):  # an expanded object
        value = value["id"]
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > 255:
        raise InvalidEvent(f"{what} must be a string.")
    return value


def apply_event(event) -> dict:
    """Apply a verified event once. Unknown types are acknowledged and ignored."""
    event = _obj(event, "The event")
    event_id = _str(event.get("id"), "event.id")
    event_type = _str(event.get("type"), "event.type")
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return {"received": True, "outcome": "ignored"}
    created = _ts(event.get("created"), "event.created")
    obj = _obj(_obj(event.get("data"), "event.data").get("object"), "event.data.object")

    # The row goes in first: a concurrent delivery of the same event waits on it, then fails.
    record = StripeEvent(id=event_id, type=event_type, outcome="pending", created=created)
    db.session.add(record)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        return {"received": True, "outcome": "duplicate"}
    try:
        account, outcome = handler(obj, created, event_type)
    except Exception:
        db.session.rollback()
        raise
    record.account_id = account.id if account else None
    record.outcome = outcome
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return {"received": True, "outcome": "duplicate"}
    if account is not None and outcome == "applied":
        key_cache.forget_account(account.id)
    log.info("stripe event %s (%s): %s", event_id, event_type, outcome)
    return {"received": True, "outcome": outcome}


def _find_account(customer_id: str | None, account_hint) -> Account | None:
    """The account a Stripe object belongs to, locked for this transaction."""
    locked = sa.select(Account).with_for_update()
    account = None
    if customer_id:
        account = db.session.scalar(locked.where(Account.stripe_customer_id == customer_id))
    if account is None and isinstance(account_hint, str) and account_hint.isdigit() and len(account_hint) < 12:
        account = db.session.scalar(locked.where(Account.id == int(account_hint)))
        if account is not None and customer_id:
            if account.stripe_customer_id is None:
                account.stripe_customer_id = customer_id
            elif account.stripe_customer_id != customer_id:
                log.warning(
                    "account %s has customer %s, event names %s", account.id, account.stripe_customer_id, customer_id
                )
    return account


def _checkout_completed(session: dict, created: datetime, _type: str):
    if session.get("mode") != "subscription":
        return None, "ignored"
    customer = _str(session.get("customer"), "customer", optional=True)
    metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    account = _find_account(customer, session.get("client_reference_id") or metadata.get("account_id"))
    if account is None:
        return None, "ignored"
    subscription = _str(session.get("subscription"), "subscription", optional=True)
    # The tier comes with the subscription events; this links the ids if they are not there yet.
    if subscription and account.stripe_subscription_id != subscription and not has_live_subscription(account):
        account.stripe_subscription_id = subscription
        account.subscription_status = None
    return account, "applied"


def _subscription_tier(subscription: dict) -> tiers.Tier | None:
    found = []
    for item in _items(subscription):
        price = item.get("price") if isinstance(item.get("price"), dict) else {}
        tier = tiers.by_lookup_key(price.get("lookup_key") or "")
        if tier:
            found.append(tier)
    return max(found, key=lambda t: t.price_usd, default=None)


def _items(subscription: dict) -> list[dict]:
    items = subscription.get("items")
    data = items.get("data") if isinstance(items, dict) else None
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise InvalidEvent("subscription.items.data must be a list of subscription items.")
    return data


def _subscription_period(subscription: dict) -> tuple[datetime, datetime]:
    # Current API versions keep the period on the items; older ones on the subscription.
    items = _items(subscription)
    source = items[0] if items and "current_period_end" in items[0] else subscription
    start = _ts(source.get("current_period_start"), "current_period_start")
    end = _ts(source.get("current_period_end"), "current_period_end")
    if end <= start:
        raise InvalidEvent("current_period_end must be after current_period_start.")
    return start, end


def _is_older(account: Account, created: datetime, event_type: str) -> bool:
    last = account.subscription_event_at
    if last is None or created > last:
        return False
    if created < last:
        return True
    # Same second: a deletion outranks an update, which outranks a creation.
    applied = db.session.scalars(
        sa.select(StripeEvent.type).where(
            StripeEvent.account_id == account.id,
            StripeEvent.outcome == "applied",
            StripeEvent.created == created,
            StripeEvent.type.in_(tuple(_EVENT_RANK)),
        )
    ).all()
    return any(_EVENT_RANK[t] > _EVENT_RANK[event_type] for t in applied)


def _subscription_changed(subscription: dict, created: datetime, event_type: str):
    sub_id = _str(subscription.get("id"), "subscription.id")
    status = _str(subscription.get("status"), "subscription.status")
    customer = _str(subscription.get("customer"), "subscription.customer", optional=True)
    metadata = subscription.get("metadata") if isinstance(subscription.get("metadata"), dict) else {}
    tier = _subscription_tier(subscription)
    ended = event_type == "customer.subscription.deleted" or status in ENDED_STATUSES
    if not ended:
        period_start, period_end = _subscription_period(subscription)

    account = _find_account(customer, metadata.get("account_id"))
    if account is None:
        return None, "ignored"
    if _is_older(account, created, event_type):
        return account, "stale"
    same = account.stripe_subscription_id == sub_id
    if same and account.subscription_status == "canceled" and not ended:
        return account, "stale"  # a cancelled subscription never comes back
    if not same and has_live_subscription(account) and (ended or status == "incomplete"):
        return account, "ignored"  # an old or abandoned subscription; the live one decides the tier

    account.subscription_event_at = created
    account.stripe_subscription_id = sub_id
    account.subscription_status = "canceled" if event_type == "customer.subscription.deleted" else status
    if ended:
        _back_to_sandbox(account)
        return account, "applied"
    if status == "incomplete":
        return account, "applied"  # the first payment has not gone through: no plan yet
    if tier is None:
        log.warning("subscription %s has no price with a known lookup key; tier unchanged", sub_id)
        return account, "applied"

    account.tier = tier.name
    account.period_start, account.period_end = period_start, period_end
    cancel_at = subscription.get("cancel_at")
    if status == "unpaid" or subscription.get("cancel_at_period_end") is True:
        account.downgrade_at = period_end
    elif isinstance(cancel_at, int) and not isinstance(cancel_at, bool):
        account.downgrade_at = min(_ts(cancel_at, "cancel_at"), period_end)
    else:
        account.downgrade_at = None
    account.cancel_at_period_end = account.downgrade_at is not None and status != "unpaid"
    if status == "active" and account.payment_failed_at and account.payment_failed_at <= created:
        account.payment_failed_at = None
    if account.downgrade_at and account.downgrade_at <= utcnow():
        _back_to_sandbox(account)
    return account, "applied"


def _back_to_sandbox(account: Account) -> None:
    account.tier = tiers.DEFAULT_TIER
    account.period_start = account.period_end = None
    account.downgrade_at = None
    account.cancel_at_period_end = False


def _payment_failed(invoice: dict, created: datetime, _type: str):
    customer = _str(invoice.get("customer"), "invoice.customer", optional=True)
    parent = invoice.get("parent") if isinstance(invoice.get("parent"), dict) else {}
    details = parent.get("subscription_details") if isinstance(parent.get("subscription_details"), dict) else {}
    metadata = details.get("metadata") if isinstance(details.get("metadata"), dict) else {}
    account = _find_account(customer, metadata.get("account_id"))
    if account is None:
        return None, "ignored"
    if (
        account.subscription_event_at
        and created < account.subscription_event_at
        and account.subscription_status == "active"
    ):
        return account, "stale"  # the subscription has been paid up since
    if account.payment_failed_at is None or created > account.payment_failed_at:
        account.payment_failed_at = created
    return account, "applied"


_HANDLERS = {
    "checkout.session.completed": _checkout_completed,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "invoice.payment_failed": _payment_failed,
}


def downgrade_lapsed(now: datetime) -> int:
    """Move accounts whose cancelled or unpaid plan has run out to Sandbox; returns how many.

    Stripe's customer.subscription.deleted normally does this at the period end; this is the
    safety net for unpaid subscriptions (which Stripe keeps) and for lost webhooks."""
    lapsed = db.session.scalars(
        sa.select(Account).where(Account.downgrade_at.is_not(None), Account.downgrade_at <= now).with_for_update()
    ).all()
    for account in lapsed:
        _back_to_sandbox(account)
    db.session.commit()
    for account in lapsed:
        key_cache.forget_account(account.id)
    return len(lapsed)


def prune_events(now: datetime) -> int:
    """Forget webhook events received more than EVENT_MEMORY ago; returns how many."""
    deleted = db.session.execute(sa.delete(StripeEvent).where(StripeEvent.received_at < now - EVENT_MEMORY))
    db.session.commit()
    return deleted.rowcount
