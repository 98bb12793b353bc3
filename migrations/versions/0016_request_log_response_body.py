"""request_log.problem becomes response_body: what the API answered, for every call

The request log kept the problem a failed call got and nothing of a successful call's answer; it
now keeps the first 8,192 characters of every answer (none of one that carried a secret). The
column keeps its rows: a failed call's problem was its response body.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("request_log") as batch:
        batch.alter_column("problem", new_column_name="response_body")


def downgrade():
    with op.batch_alter_table("request_log") as batch:
        batch.alter_column("response_body", new_column_name="problem")
