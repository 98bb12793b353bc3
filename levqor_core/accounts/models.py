"""The developer account: sign-in identity (Flask-Security-Too's user), tier and the Stripe side of it."""

import uuid
from datetime import datetime

import sqlalchemy as sa
from flask_security import AsaList, RoleMixin, UserMixin
from sqlalchemy.ext.mutable import MutableList
from sqlalchemy.orm import Mapped, mapped_column, relationship, synonym

from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db
from levqor_core.tiers import DEFAULT_TIER

account_roles = sa.Table(
    "account_roles",
    db.metadata,
    sa.Column("account_id", sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role_id", sa.ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)


class Role(db.Model, RoleMixin):
    """A named permission set; `ops` opens /developer/ops (`flask accounts grant-role`)."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(80), unique=True)
    description: Mapped[str | None] = mapped_column(sa.String(255))
    # Flask-Security-Too reads `permissions` when present; roles here carry none.
    permissions = mapped_column(MutableList.as_mutable(AsaList()), nullable=True)


class Account(db.Model, UserMixin):
    """Flask-Security-Too's user: `get_id()` is `fs_uniquifier`, so the session cookie names it and
    a new uniquifier (log-out, password change or reset) ends every session at once."""

    __tablename__ = "accounts"
    # SQLite never hands a deleted account's id to the next sign-up (migration 0013): Redis keeps
    # limits and counters by account id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    password = synonym("password_hash")  # the name Flask-Security-Too reads and writes
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True, server_default=sa.true())
    # A default here, not only in Flask-Security-Too's create_user: accounts made by the CLI, bulk
    # inserts and tests need one too.
    fs_uniquifier: Mapped[str] = mapped_column(sa.String(64), unique=True, default=lambda: uuid.uuid4().hex)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Trackable: the last two sign-ins (shown on /developer/account).
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_ip: Mapped[str | None] = mapped_column(sa.String(64))
    current_login_ip: Mapped[str | None] = mapped_column(sa.String(64))
    login_count: Mapped[int | None] = mapped_column(sa.Integer)
    # Two-factor sign-in (TOTP) and its recovery codes.
    tf_primary_method: Mapped[str | None] = mapped_column(sa.String(64))
    tf_totp_secret: Mapped[str | None] = mapped_column(sa.String(255))
    tf_phone_number: Mapped[str | None] = mapped_column(sa.String(128))
    mf_recovery_codes = mapped_column(MutableList.as_mutable(AsaList()), nullable=True)

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
    roles = relationship(Role, secondary=account_roles, lazy="selectin")


class SignIn(db.Model):
    """One successful sign-in, for "Recent sign-ins" on /developer/account (the newest few per
    account are kept: levqor_core.accounts.sign_ins)."""

    __tablename__ = "sign_ins"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(sa.String(64))
    user_agent: Mapped[str | None] = mapped_column(sa.String(255))
    # How: "password", "password + authenticator app", "password + recovery code", "password reset", ...
    method: Mapped[str] = mapped_column(sa.String(64))
