"""request_log.at indexed: the 7-day purge deletes a range of the index instead of scanning

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_request_log_at", "request_log", ["at"])


def downgrade():
    op.drop_index("ix_request_log_at", table_name="request_log")
