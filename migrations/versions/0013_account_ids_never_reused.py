"""accounts.id never reused on SQLite (AUTOINCREMENT)

SQLite, the embedded default, gives a new row the highest id in use plus one: the id of an account
deleted last went to the next sign-up, which then inherited what Redis keeps by account id (the
day's key creation, usage counters, rate limits). With AUTOINCREMENT it never hands out an id
twice. The table is rebuilt to say so (SQLite cannot alter it in place); PostgreSQL's sequences
never reuse an id, so nothing changes there.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("accounts", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("accounts", recreate="always", table_kwargs={"sqlite_autoincrement": False}):
        pass
