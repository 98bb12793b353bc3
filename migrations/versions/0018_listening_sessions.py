"""webhook_endpoints.kind and last_seen_at: listening sessions (`levqor listen`)

A listening session is a webhook endpoint of its own kind: it gets the account's events, signed
with its own stable secret, over the stream the CLI holds open, and its row goes when the stream
closes. `last_seen_at` is renewed on each heartbeat, so a session whose process died is not shown.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.add_column(sa.Column("kind", sa.String(10), nullable=False, server_default="endpoint"))
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table("webhook_endpoints") as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("kind")
