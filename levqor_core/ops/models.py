"""Tables behind the background jobs: Notion database ids, quota alerts, nightly health entries."""

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from levqor_core.accounts import deletion
from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db


class NotionDatabase(db.Model):
    """A Notion database the jobs write to, found or created once and remembered by name."""

    __tablename__ = "notion_databases"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    parent_page_id: Mapped[str] = mapped_column(sa.String(64))
    database_id: Mapped[str] = mapped_column(sa.String(64))
    data_source_id: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuotaAlert(db.Model):
    """One alert per account, usage period and threshold: the unique constraint makes it exact."""

    __tablename__ = "quota_alerts"
    __table_args__ = (sa.UniqueConstraint("account_id", "period_id", "threshold", name="uq_quota_alerts_once"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    period_id: Mapped[str] = mapped_column(sa.String(32))
    threshold: Mapped[int] = mapped_column(sa.Integer)  # percent of the quota: 80 or 100
    calls_used: Mapped[int] = mapped_column(sa.BigInteger)
    quota: Mapped[int] = mapped_column(sa.BigInteger)
    # pending (still to deliver) | sent | superseded (a higher threshold was crossed in the same run)
    status: Mapped[str] = mapped_column(sa.String(12), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    email_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    team_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(sa.String(500))


class HealthLogEntry(db.Model):
    """The nightly summary of one UTC day, kept locally and written once to Notion."""

    __tablename__ = "health_log_entries"

    day: Mapped[date] = mapped_column(sa.Date, primary_key=True)
    figures: Mapped[dict] = mapped_column(sa.JSON)
    notion_page_id: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@deletion.step("quota-alert-rows", deletion.ROWS, tables=("quota_alerts",))
def _delete_quota_alert_rows(account, _actor) -> None:
    db.session.execute(sa.delete(QuotaAlert).where(QuotaAlert.account_id == account.id))
