"""API keys (stored only as hashes) and their audit trail."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db

# Who revokes a key GitHub's secret scanning found in public, in its audit trail.
LEAK_ACTOR = "github-secret-scanning"


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
    # When GitHub's secret scanning reported it while it still worked (it was revoked then).
    leaked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    account = relationship("Account", back_populates="keys")

    def is_usable(self, now: datetime) -> bool:
        if self.status == "active":
            return True
        return self.status == "expiring" and self.expires_at is not None and now < self.expires_at

    def to_dict(self, tier: str) -> dict:
        """The key as the API shows it (the spec's `ApiKey`): never its hash, never the raw key."""
        return {
            "id": self.id,
            "hint": self.hint,
            "tier": tier,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


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
    # Part of an emergency replacement (a leaked key revoked at once and a new one issued beside
    # the daily creation limit, after a fresh log-in): its "revoked" and "rolled"/"created" events.
    emergency: Mapped[bool] = mapped_column(sa.Boolean, default=False, server_default=sa.false())
    # A "revoked" event caused by a leak: where GitHub's secret scanning found the key in public.
    leak_url: Mapped[str | None] = mapped_column(sa.String(2048))

    def to_dict(self, personal: bool) -> dict:
        """One audit-trail entry. Without `personal` (a key reading it, which may be a leaked one),
        who acted is reduced to "portal" / "system" / LEAK_ACTOR / the acting key, and addresses and user agents
        are left out: they belong to the signed-in owner only."""
        actor = self.actor
        if not personal and actor not in ("system", LEAK_ACTOR) and not actor.startswith("api-key:"):
            actor = "portal"
        return {
            "key_id": self.key_id,
            "event": self.event,
            "at": self.at.isoformat(),
            "actor": actor,
            "ip": self.ip if personal else None,
            "user_agent": self.user_agent if personal else None,
            "emergency": self.emergency,
            "leak_url": self.leak_url,
        }
