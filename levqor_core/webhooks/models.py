"""Webhook endpoints (their secret kept only encrypted) and the delivery log."""

import enum
import json
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db

ONE_PENDING_PING = "event_type = 'ping' AND status = 'pending'"
ONE_PENDING_PING_INDEX = "uq_webhook_deliveries_one_pending_ping"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # an attempt is due (the first, or a retry)
    SUCCEEDED = "succeeded"  # a 2xx answered
    FAILED = "failed"  # every attempt of the schedule failed, or the endpoint was disabled or deleted


class EndpointKind(enum.StrEnum):
    ENDPOINT = "endpoint"
    LISTENER = "listener"


class WebhookEndpoint(db.Model):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)  # public id, "we_..."
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(sa.String(2048))
    events_json: Mapped[str] = mapped_column(sa.Text)  # the subscribed event types, a JSON list
    # Sandbox endpoints (made through /api/sandbox/v1) receive the sandbox's events, live ones the live events.
    sandbox: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    # The signing secret, encrypted with a key derived from SECRET_KEY (webhooks.secrets): shown
    # once at creation, never stored or logged in clear.
    secret_encrypted: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The first failed attempt of an unbroken run of failures; cleared by any success.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # ENDPOINT: a URL the worker posts each event to. LISTENER: a listening session (`levqor
    # listen`), which gets the same signed events over its open stream and is gone when it closes.
    kind: Mapped[str] = mapped_column(sa.String(10), default="endpoint", server_default="endpoint")
    # A listening session's last heartbeat: one that stopped (its process killed) is not shown.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    deliveries = relationship("WebhookDelivery", back_populates="endpoint", passive_deletes=True, lazy="dynamic")

    @property
    def events(self) -> list[str]:
        return json.loads(self.events_json)

    def subscribes_to(self, event_type: str) -> bool:
        return event_type in self.events

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "sandbox": self.sandbox,
            "created_at": self.created_at.isoformat(),
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


class WebhookDelivery(db.Model):
    """One event for one endpoint: the exact body signed, and the outcome of its latest attempt."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        # One test event pending per endpoint, held by the database: two clicks at once cannot both
        # pass the service's check (migration 0011).
        sa.Index(
            ONE_PENDING_PING_INDEX,
            "endpoint_id",
            unique=True,
            postgresql_where=sa.text(ONE_PENDING_PING),
            sqlite_where=sa.text(ONE_PENDING_PING),
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)  # "msg_...", sent as webhook-id
    endpoint_id: Mapped[str] = mapped_column(sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(sa.String(40))
    payload: Mapped[str] = mapped_column(sa.Text)  # the body, byte for byte as signed and sent
    status: Mapped[str] = mapped_column(sa.String(10), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer)
    last_latency_ms: Mapped[int | None] = mapped_column(sa.Integer)
    last_response_excerpt: Mapped[str | None] = mapped_column(sa.String(512))
    last_error: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    endpoint = relationship("WebhookEndpoint", back_populates="deliveries")

    def to_dict(self) -> dict:
        def stamp(value):
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "event_type": self.event_type,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": stamp(self.next_attempt_at),
            "last_attempt_at": stamp(self.last_attempt_at),
            "last_status_code": self.last_status_code,
            "last_latency_ms": self.last_latency_ms,
            "last_response_excerpt": self.last_response_excerpt,
            "last_error": self.last_error,
            "created_at": stamp(self.created_at),
        }
