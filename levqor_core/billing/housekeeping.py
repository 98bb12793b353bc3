"""Billing housekeeping, run daily by the periodic job `billing-downgrade`: plans that have run out
go back to Sandbox, and webhook event ids are forgotten once Stripe can no longer resend them."""

from datetime import datetime, timedelta

import sqlalchemy as sa

from levqor_core.accounts.models import Account
from levqor_core.billing import subscriptions
from levqor_core.billing.models import StripeEvent
from levqor_core.extensions import db
from levqor_core.limits import key_cache

# Stripe retries a webhook for up to 3 days and can resend an event for 30; ids are kept past both.
EVENT_MEMORY = timedelta(days=90)


def downgrade_lapsed(now: datetime) -> int:
    """Move accounts whose cancelled or unpaid plan has run out to Sandbox; returns how many.

    Stripe's customer.subscription.deleted normally does this at the period end; this is the
    safety net for unpaid subscriptions (which Stripe keeps) and for lost webhooks."""
    lapsed = db.session.scalars(
        sa.select(Account).where(Account.downgrade_at.is_not(None), Account.downgrade_at <= now).with_for_update()
    ).all()
    for account in lapsed:
        subscriptions.back_to_sandbox(account)
    db.session.commit()
    for account in lapsed:
        key_cache.forget_account(account.id)
    return len(lapsed)


def prune_events(now: datetime) -> int:
    """Forget webhook events received more than EVENT_MEMORY ago; returns how many."""
    deleted = db.session.execute(sa.delete(StripeEvent).where(StripeEvent.received_at < now - EVENT_MEMORY))
    db.session.commit()
    return deleted.rowcount
