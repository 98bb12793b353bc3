"""One row per API call an account made: what the developer sees at /developer/logs."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from levqor_core.columns import UTCDateTime
from levqor_core.extensions import db


class RequestLogEntry(db.Model):
    __tablename__ = "request_log"
    # Newest first per account, by time then id (the keyset the pages and the trim walk); by time
    # alone for the 7-day purge, whose cost then follows the rows that expire, not the table's size.
    __table_args__ = (
        sa.Index("ix_request_log_account_at", "account_id", "at", "id"),
        sa.Index("ix_request_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True)
    # No foreign key: rows are written in batches after the fact, and a batch must not fail because
    # one of its accounts was deleted meanwhile; the trim sweeps a deleted account's late rows.
    account_id: Mapped[int] = mapped_column(sa.Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    request_id: Mapped[str] = mapped_column(sa.String(32))
    key_id: Mapped[str | None] = mapped_column(sa.String(40))  # None for a portal session's call
    method: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.String(512))
    query: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[int] = mapped_column(sa.SmallInteger)
    latency_ms: Mapped[float] = mapped_column(sa.Float)
    problem_type: Mapped[str | None] = mapped_column(sa.String(200))
    sandbox: Mapped[bool] = mapped_column(sa.Boolean)
    # What was sent, truncated; never any header, so never the key (and a key pasted in is redacted).
    request_body: Mapped[str | None] = mapped_column(sa.Text)
    # What the API answered (a problem for a failed call), up to 8,192 characters; none for an answer
    # that carried a secret (a new webhook endpoint's signing secret: `Cache-Control: no-store`).
    response_body: Mapped[str | None] = mapped_column(sa.Text)

    @property
    def problem_slug(self) -> str | None:
        return self.problem_type.rstrip("/").rsplit("/", 1)[-1] if self.problem_type else None
