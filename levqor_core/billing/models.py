"""Stripe webhook events already applied."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db


class StripeEvent(db.Model):
    """Stripe webhook events already applied: each event id is processed once."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16))  # applied | stale | ignored
    created: Mapped[datetime] = mapped_column(UTCDateTime)  # the event's own timestamp
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
