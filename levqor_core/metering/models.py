"""Persisted usage: calls per key per UTC day."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from levqor_core.extensions import db


class UsageDaily(db.Model):
    """Calls per key per UTC day, persisted from the Redis counters."""

    __tablename__ = "usage_daily"
    # A period's SUM and the chart read a range of days of one account (migration 0017).
    __table_args__ = (sa.Index("ix_usage_daily_account_id_day", "account_id", "day"),)

    key_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    day: Mapped[datetime] = mapped_column(sa.Date, primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"))
    calls: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    sandbox_calls: Mapped[int] = mapped_column(sa.BigInteger, default=0)
