"""the request log (/developer/logs)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "request_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("problem_type", sa.String(length=200), nullable=True),
        sa.Column("sandbox", sa.Boolean(), nullable=False),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_log") as batch_op:
        batch_op.create_index("ix_request_log_account_at", ["account_id", "at", "id"], unique=False)


def downgrade():
    with op.batch_alter_table("request_log") as batch_op:
        batch_op.drop_index("ix_request_log_account_at")
    op.drop_table("request_log")
