"""Stripe's webhook: verify a delivery, then apply its event once and in order, moving the account
between tiers.

Stripe is the source of truth for subscriptions; the account row keeps what the hot path needs
(tier, subscription period) plus enough state to apply webhook events once and in order:
`stripe_events` remembers every event id applied, and `Account.subscription_event_at` holds the
`created` time of the newest subscription event applied, so a late, older event is ignored.
"""

import json
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
import stripe
from flask import current_app
from sqlalchemy.exc import IntegrityError

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.billing import subscriptions
from levqor_core.billing.models import StripeEvent
from levqor_core.billing.problems import BillingNotConfigured, InvalidEvent, InvalidSignature
from levqor_core.billing.subscriptions import SubscriptionStatus
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.limits import key_cache

log = logging.getLogger(__name__)

# Stripe's own default: a signature older than this is refused as a possible replay.
SIGNATURE_TOLERANCE_SECONDS = 300
# Several subscription events can share one `created` second; this orders them.
_EVENT_RANK = {
    "customer.subscription.created": 0,
    "customer.subscription.updated": 1,
    "customer.subscription.deleted": 2,
}


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
    if (
        subscription
        and account.stripe_subscription_id != subscription
        and not subscriptions.has_live_subscription(account)
    ):
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
    ended = event_type == "customer.subscription.deleted" or status in subscriptions.ENDED_STATUSES
    if not ended:
        period_start, period_end = _subscription_period(subscription)

    account = _find_account(customer, metadata.get("account_id"))
    if account is None:
        return None, "ignored"
    if _is_older(account, created, event_type):
        return account, "stale"
    same = account.stripe_subscription_id == sub_id
    if same and account.subscription_status == SubscriptionStatus.CANCELED and not ended:
        return account, "stale"  # a cancelled subscription never comes back
    if not same and subscriptions.has_live_subscription(account) and (ended or status == SubscriptionStatus.INCOMPLETE):
        return account, "ignored"  # an old or abandoned subscription; the live one decides the tier

    account.subscription_event_at = created
    account.stripe_subscription_id = sub_id
    account.subscription_status = (
        SubscriptionStatus.CANCELED.value if event_type == "customer.subscription.deleted" else status
    )
    if ended:
        subscriptions.back_to_sandbox(account)
        return account, "applied"
    if status == SubscriptionStatus.INCOMPLETE:
        return account, "applied"  # the first payment has not gone through: no plan yet
    if tier is None:
        log.warning("subscription %s has no price with a known lookup key; tier unchanged", sub_id)
        return account, "applied"

    account.tier = tier.name
    account.period_start, account.period_end = period_start, period_end
    cancel_at = subscription.get("cancel_at")
    if status == SubscriptionStatus.UNPAID or subscription.get("cancel_at_period_end") is True:
        account.downgrade_at = period_end
    elif isinstance(cancel_at, int) and not isinstance(cancel_at, bool):
        account.downgrade_at = min(_ts(cancel_at, "cancel_at"), period_end)
    else:
        account.downgrade_at = None
    account.cancel_at_period_end = account.downgrade_at is not None and status != SubscriptionStatus.UNPAID
    if status == SubscriptionStatus.ACTIVE and account.payment_failed_at and account.payment_failed_at <= created:
        account.payment_failed_at = None
    if account.downgrade_at and account.downgrade_at <= utcnow():
        subscriptions.back_to_sandbox(account)
    return account, "applied"


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
        and account.subscription_status == SubscriptionStatus.ACTIVE
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
