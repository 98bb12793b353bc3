"""billing tables and columns

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("stripe_customer_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("stripe_subscription_id", sa.String(255), nullable=True))
        batch.add_column(sa.Column("subscription_status", sa.String(32), nullable=True))
        batch.add_column(sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("downgrade_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("payment_failed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("subscription_event_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_accounts_stripe_customer_id", ["stripe_customer_id"])

    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stripe_events_account_id", "stripe_events", ["account_id"])


def downgrade():
    op.drop_index("ix_stripe_events_account_id", table_name="stripe_events")
    op.drop_table("stripe_events")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("uq_accounts_stripe_customer_id", type_="unique")
        for column in (
            "subscription_event_at",
            "payment_failed_at",
            "downgrade_at",
            "cancel_at_period_end",
            "subscription_status",
            "stripe_subscription_id",
            "stripe_customer_id",
        ):
            batch.drop_column(column)
