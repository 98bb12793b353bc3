"""A subscription's status, as Stripe names it, and what it means for the account's plan."""

from enum import StrEnum

from levqor_core import tiers
from levqor_core.accounts.models import Account


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses. A `str`, so `accounts.subscription_status` stores the bare
    value it always has; a status Stripe adds later is stored as it comes (a plain string)."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"
    CANCELED = "canceled"
    PAUSED = "paused"


# Statuses in which the subscription pays for its tier (past_due: Stripe is still retrying).
LIVE_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE)
# Statuses in which the subscription no longer pays for anything: the account is back on Sandbox.
ENDED_STATUSES = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED, SubscriptionStatus.PAUSED)
# Statuses a subscription never leaves (a paused one can resume, an incomplete one still be paid).
FINAL_STATUSES = (SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED)


def has_live_subscription(account: Account) -> bool:
    """Whether the account has a subscription Stripe still bills (unpaid ones included: they may
    yet be paid, and a second subscription would bill the customer twice)."""
    return bool(account.stripe_subscription_id) and account.subscription_status in (
        *LIVE_STATUSES,
        SubscriptionStatus.UNPAID,
    )


def back_to_sandbox(account: Account) -> None:
    """Put the account on the free tier with no paid period (the subscription's status is kept)."""
    account.tier = tiers.DEFAULT_TIER
    account.period_start = account.period_end = None
    account.downgrade_at = None
    account.cancel_at_period_end = False
