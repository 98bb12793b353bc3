"""Buying a plan (a Stripe Checkout Session) and managing it (Stripe's customer portal)."""

import hashlib

import sqlalchemy as sa
import stripe

from levqor_core import tiers
from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.billing import catalogue, stripe_client, subscriptions
from levqor_core.billing.models import StripeEvent
from levqor_core.billing.problems import AlreadySubscribed, NoBillingAccount, UnknownPlan
from levqor_core.extensions import db


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
    if subscriptions.has_live_subscription(account):
        raise AlreadySubscribed("You already have a subscription; change or cancel it with Manage billing.")
    sc = stripe_client.client()
    try:
        price = catalogue.price_id(sc, tier)
        customer = ensure_customer(sc, account)
        session = sc.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "customer": customer,
                "client_reference_id": str(account.id),
                "line_items": [{"price": price, "quantity": 1}],
                "subscription_data": {"metadata": {"account_id": str(account.id), "tier": tier.name}},
                "metadata": {"account_id": str(account.id), "tier": tier.name},
                "success_url": f"{stripe_client.public_base_url()}/developer/billing?checkout=success",
                "cancel_url": f"{stripe_client.public_base_url()}/developer/billing?checkout=canceled",
            }
        )
    except stripe.StripeError as err:
        raise stripe_client.provider_error(err) from None
    return session.url


def portal_url(account: Account) -> str:
    """A Stripe customer-portal session for a paying (or formerly paying) account."""
    if not account.stripe_customer_id or not account.stripe_subscription_id:
        raise NoBillingAccount("This account has no paid plan to manage; upgrade first.")
    sc = stripe_client.client()
    try:
        session = sc.v1.billing_portal.sessions.create(
            params={
                "customer": account.stripe_customer_id,
                "return_url": f"{stripe_client.public_base_url()}/developer/billing",
            }
        )
    except stripe.StripeError as err:
        raise stripe_client.provider_error(err) from None
    return session.url


def stop_billing(account: Account) -> int:
    """Leave nothing that could bill the account's Stripe customer (account deletion): its open
    Checkout sessions are expired (one paid later would start a subscription nothing cancels), and
    every subscription that could still bill is canceled at once: the one on record, any this app
    has not heard of yet (a checkout paid whose webhook is on its way), paused and incomplete ones
    (one could resume, the other still be paid). A checkout completed in between fails its expiry,
    so the deletion stops and is tried again once its subscription is listed. Returns how many
    subscriptions were canceled."""
    if not account.stripe_customer_id or not stripe_client.is_configured():
        return 0  # no customer, nothing bought (ensure_customer comes before any checkout)
    sc = stripe_client.client()
    of_customer = {"customer": account.stripe_customer_id, "limit": 100}
    canceled = 0
    try:
        for listed in sc.v1.checkout.sessions.list(params=of_customer | {"status": "open"}).auto_paging_iter():
            sc.v1.checkout.sessions.expire(listed.id)
        for listed in sc.v1.subscriptions.list(params=of_customer | {"status": "all"}).auto_paging_iter():
            if listed.status in subscriptions.FINAL_STATUSES:
                continue
            try:
                sc.v1.subscriptions.cancel(listed.id)
            except stripe.InvalidRequestError as err:
                if err.code != "resource_missing":
                    raise
                continue  # gone since it was listed
            canceled += 1
    except stripe.StripeError as err:
        raise stripe_client.provider_error(err) from None
    if account.stripe_subscription_id and account.subscription_status not in subscriptions.FINAL_STATUSES:
        account.subscription_status = subscriptions.SubscriptionStatus.CANCELED
    return canceled


@deletion.step("stop-billing", deletion.BILLING)
def _stop_billing_of_deleted_account(account: Account, _actor) -> None:
    if stop_billing(account):
        db.session.commit()


@deletion.step("unlink-stripe-events", deletion.ROWS, tables=("stripe_events",))
def _unlink_stripe_events(account: Account, _actor) -> None:
    """Each payment event's record stays (id, type, outcome, time), no longer naming the account."""
    db.session.execute(sa.update(StripeEvent).where(StripeEvent.account_id == account.id).values(account_id=None))
