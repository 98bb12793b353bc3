"""api_keys.leaked_at and key_events.leak_url: keys revoked because GitHub found them in public

A key GitHub's secret scanning reports is revoked at once. Its "revoked" event carries the URL
where it was found (the API's `event` enum stays as clients know it, as with `emergency`), and the
key remembers when, so a report sent again is answered the same way and changes nothing.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("leaked_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("key_events") as batch:
        batch.add_column(sa.Column("leak_url", sa.String(2048), nullable=True))


def downgrade():
    with op.batch_alter_table("key_events") as batch:
        batch.drop_column("leak_url")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("leaked_at")
