"""What the billing page shows: the account's plan, its renewal or end, and payment problems."""

from dataclasses import dataclass
from datetime import datetime

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.billing import subscriptions
from levqor_core.billing.subscriptions import SubscriptionStatus


@dataclass(frozen=True)
class BillingStatus:
    """What /developer/billing shows about an account's plan."""

    tier: tiers.Tier
    status: str | None
    renews_at: datetime | None
    ends_at: datetime | None
    payment_problem: str | None
    can_manage: bool
    can_upgrade: bool


def billing_status(account: Account, now: datetime) -> BillingStatus:
    """The account's plan, renewal or end date and payment problem, as of `now`."""
    tier = tiers.get(account.tier)
    live = subscriptions.has_live_subscription(account)
    ends_at = account.downgrade_at if live and tier.price_usd else None
    renews_at = account.period_end if live and tier.price_usd and not ends_at else None
    problem = None
    if account.subscription_status == SubscriptionStatus.UNPAID and tier.price_usd:
        problem = "Your payment did not go through; the plan returns to Sandbox at the end of the period."
    elif account.subscription_status == SubscriptionStatus.UNPAID:
        problem = "Your subscription is unpaid; pay the open invoice with Manage billing to restore your plan."
    elif account.payment_failed_at or account.subscription_status == SubscriptionStatus.PAST_DUE:
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
