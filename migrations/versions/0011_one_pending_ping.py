"""webhook_deliveries: at most one pending test event (`ping`) per endpoint, as a unique partial index

The service checked for a pending test event before queueing another, but two requests at once
could both pass that check. Any such duplicates already there are settled first: the newest pending
ping of an endpoint stays pending, the older ones are marked failed (their attempt never came).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

WHERE = "event_type = 'ping' AND status = 'pending'"


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        # The release phase runs while the old processes still serve: no ping may be queued between
        # settling the duplicates and building the index.
        op.execute("LOCK TABLE webhook_deliveries IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        sa.text(
            f"""
            UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL,
                last_error = 'superseded by a newer test event'
            WHERE {WHERE} AND EXISTS (
                SELECT 1 FROM webhook_deliveries AS newer
                WHERE newer.endpoint_id = webhook_deliveries.endpoint_id
                  AND newer.event_type = 'ping' AND newer.status = 'pending'
                  AND (newer.created_at > webhook_deliveries.created_at
                       OR (newer.created_at = webhook_deliveries.created_at AND newer.id > webhook_deliveries.id))
            )
            """
        )
    )
    op.create_index(
        "uq_webhook_deliveries_one_pending_ping",
        "webhook_deliveries",
        ["endpoint_id"],
        unique=True,
        postgresql_where=sa.text(WHERE),
        sqlite_where=sa.text(WHERE),
    )


def downgrade():
    op.drop_index("uq_webhook_deliveries_one_pending_ping", table_name="webhook_deliveries")
