"""The API's jobs: one row per job a developer submitted, and its statuses."""

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from levqor_core.columns import UTCDateTime, utcnow
from levqor_core.extensions import db

STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
IN_FLIGHT = ("queued", "running")  # counted against the tier's cap, and cancelable
FINISHED = ("succeeded", "failed", "canceled")


def new_job_id() -> str:
    """A job's public id, production or sandbox: "job_" and 20 hex digits."""
    return "job_" + secrets.token_hex(10)


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "idempotency_key", name="uq_jobs_idempotency"),
        # The operator's 24 h figures read the window's range, status included (migration 0017).
        sa.Index("ix_jobs_finished_at_status", "finished_at", "status"),
        # Jobs in flight by status (the requeue's scan): finished ones, most of the table, left out,
        # so no plan over finished jobs reads every one of them through it (migration 0017).
        sa.Index(
            "ix_jobs_status_in_flight",
            "status",
            postgresql_where=sa.text("status IN ('queued', 'running')"),
            sqlite_where=sa.text("status IN ('queued', 'running')"),
        ),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    id: Mapped[str] = mapped_column(sa.String(32), unique=True)  # public id, "job_..."
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("accounts.id"), index=True)
    workflow: Mapped[str] = mapped_column(sa.String(64))
    input: Mapped[dict] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(10), default="queued")  # one of STATUSES
    result: Mapped[dict | list | None] = mapped_column(sa.JSON)
    error: Mapped[dict | None] = mapped_column(sa.JSON)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    request_hash: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        """The job as the API shows it (the spec's `Job`), production and sandbox alike."""
        return public_job(self)


# Rows per status in job_state_counts on PostgreSQL (migrations/versions/0017 has the same figure).
STATE_COUNT_SHARDS = 16


class JobStateCount(db.Model):
    """Jobs per status, summed over shards: kept by triggers on `jobs` (migration 0017) on every
    insert, status change, delete and truncate, so reading them costs the same at any job count."""

    __tablename__ = "job_state_counts"
    __table_args__ = (sa.PrimaryKeyConstraint("status", "shard", name="pk_job_state_counts"),)

    status: Mapped[str] = mapped_column(sa.String(10))
    shard: Mapped[int] = mapped_column(sa.SmallInteger)
    n: Mapped[int] = mapped_column(sa.BigInteger)


# What the API shows of a job: the columns public_job reads, and no more (the poll selects these).
PUBLIC_COLUMNS = ("id", "workflow", "status", "input", "result", "error", "created_at", "started_at", "finished_at")


def public_job(job) -> dict:
    """The spec's `Job` from anything with PUBLIC_COLUMNS as attributes: a Job, or a row of them."""
    return {
        "id": job.id,
        "workflow": job.workflow,
        "status": job.status,
        "input": job.input,
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
