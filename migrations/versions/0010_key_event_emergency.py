"""key_events.emergency: the events of an emergency key replacement are marked as such

A leaked key can be replaced at once, beside the daily key-creation limit, after a fresh log-in
(once a day). Its events keep their kinds ("revoked" for the keys it cut off, "rolled" or "created"
for the new one) and carry this flag, so the API's `event` enum stays as clients know it. Every
event recorded before is an ordinary one (false).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("key_events") as batch:
        batch.add_column(sa.Column("emergency", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade():
    with op.batch_alter_table("key_events") as batch:
        batch.drop_column("emergency")
