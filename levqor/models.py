"""Database models. Behaviour that belongs to one row lives on its model."""

from datetime import UTC, datetime

import sqlalchemy as sa
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db
from .tiers import DEFAULT_TIER


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes on both PostgreSQL and SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


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
    # Billing (levqor.billing): the Stripe side of the account, written by the webhook.
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


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    __table_args__ = (
        # One active key per account, enforced by the database itself.
        sa.Index(
            "uq_api_keys_one_active",
            "account_id",
            unique=True,
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # public id, "key_..."
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    hint: Mapped[str] = mapped_column(sa.String(32))
    # active | expiring (old key in a rotation grace period) | revoked | expired
    status: Mapped[str] = mapped_column(sa.String(10), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_on: Mapped[datetime | None] = mapped_column(UTCDateTime)

    account = relationship("Account", back_populates="keys")

    def is_usable(self, now: datetime) -> bool:
        if self.status == "active":
            return True
        return self.status == "expiring" and self.expires_at is not None and now < self.expires_at


class KeyEvent(db.Model):
    """Audit trail of key lifecycle events, shown to the account owner."""

    __tablename__ = "key_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    key_id: Mapped[str] = mapped_column(sa.String(32))
    event: Mapped[str] = mapped_column(sa.String(16))  # created | rolled | revoked | expired
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(254))
    ip: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(512))


class StripeEvent(db.Model):
    """Stripe webhook events already applied: each event id is processed once."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    type: Mapped[str] = mapped_column(sa.String(64))
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    outcome: Mapped[str] = mapped_column(sa.String(16))  # applied | stale | ignored
    created: Mapped[datetime] = mapped_column(UTCDateTime)  # the event's own timestamp
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsageDaily(db.Model):
    """Calls per key per UTC day, persisted from the Redis counters."""

    __tablename__ = "usage_daily"

    key_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    day: Mapped[datetime] = mapped_column(sa.Date, primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    calls: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    sandbox_calls: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (sa.UniqueConstraint("account_id", "idempotency_key", name="uq_jobs_idempotency"),)

    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)  # public id, "job_..."
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    workflow: Mapped[str] = mapped_column(sa.String(64))
    input: Mapped[dict] = mapped_column(sa.JSON)
    # queued | running | succeeded | failed | canceled
    status: Mapped[str] = mapped_column(sa.String(10), default="queued", index=True)
    result: Mapped[dict | list | None] = mapped_column(sa.JSON)
    error: Mapped[dict | None] = mapped_column(sa.JSON)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    request_hash: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "status": self.status,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


from . import ops_models  # noqa: E402, F401  (background-jobs tables, so metadata sees them)
