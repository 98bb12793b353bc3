"""Billing with Stripe, one module per job: problems, the Stripe client, the catalogue, checkout and
the customer portal, subscription statuses, the billing page's overview, the webhook's state
machine, housekeeping.

What the handlers, the portal and the CLI call is named here, so they read `billing.start_checkout`
whichever module holds it."""

from levqor_core.billing.catalogue import sync_catalogue
from levqor_core.billing.checkout import paid_tier, portal_url, start_checkout
from levqor_core.billing.housekeeping import downgrade_lapsed, prune_events
from levqor_core.billing.overview import BillingStatus, billing_status
from levqor_core.billing.problems import (
    AlreadySubscribed,
    BillingNotConfigured,
    InvalidEvent,
    InvalidSignature,
    NoBillingAccount,
    PaymentProviderError,
    UnknownPlan,
)
from levqor_core.billing.stripe_client import is_configured
from levqor_core.billing.subscriptions import SubscriptionStatus, has_live_subscription
from levqor_core.billing.webhook import apply_event, handle_webhook

__all__ = [
    "AlreadySubscribed",
    "BillingNotConfigured",
    "BillingStatus",
    "InvalidEvent",
    "InvalidSignature",
    "NoBillingAccount",
    "PaymentProviderError",
    "SubscriptionStatus",
    "UnknownPlan",
    "apply_event",
    "billing_status",
    "downgrade_lapsed",
    "handle_webhook",
    "has_live_subscription",
    "is_configured",
    "paid_tier",
    "portal_url",
    "prune_events",
    "start_checkout",
    "sync_catalogue",
]
