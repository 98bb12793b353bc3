"""The developer account: sign-in identity, tier and the Stripe side of it."""

from datetime import datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db
from levqor_core.limits.tiers import DEFAULT_TIER


class Account(UserMixin, db.Model):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    tier: Mapped[str] = mapped_column(sa.String(20), default=DEFAULT_TIER)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Paid accounts meter over the Stripe subscription period; free ones over the calendar month.
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Billing (levqor_core.billing): the Stripe side of the account, written by the webhook.
    stripe_customer_id: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(sa.String(255))
    subscription_status: Mapped[str | None] = mapped_column(sa.String(32))
    cancel_at_period_end: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    # When a cancelled or unpaid subscription stops paying for the tier (back to Sandbox then).
    downgrade_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payment_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # `created` of the newest subscription event applied: older events never overwrite newer state.
    subscription_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    keys = relationship("ApiKey", back_populates="account", lazy="dynamic")
