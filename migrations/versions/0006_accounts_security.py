"""accounts on Flask-Security-Too: session identifier, confirmation, sign-in tracking, two-factor, roles

Every account that exists before this migration counts as confirmed: `confirmed_at` is set to its
`created_at` (they signed up before confirmation existed, and their keys keep working). Each gets
its own random `fs_uniquifier`, the session identifier the session cookie now names, so sessions
signed before this migration (which named the account id) end and everyone logs in once again.

Revision ID: 0006
Revises: 0005
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("fs_uniquifier", sa.String(64), nullable=True))
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("current_login_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_login_ip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("current_login_ip", sa.String(64), nullable=True))
        batch.add_column(sa.Column("login_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tf_primary_method", sa.String(64), nullable=True))
        batch.add_column(sa.Column("tf_totp_secret", sa.String(255), nullable=True))
        batch.add_column(sa.Column("tf_phone_number", sa.String(128), nullable=True))
        batch.add_column(sa.Column("mf_recovery_codes", sa.Text(), nullable=True))

    accounts = sa.table("accounts", sa.column("id", sa.Integer), sa.column("fs_uniquifier", sa.String))
    connection = op.get_bind()
    for (account_id,) in connection.execute(sa.select(accounts.c.id)).all():
        connection.execute(
            accounts.update().where(accounts.c.id == account_id).values(fs_uniquifier=uuid.uuid4().hex)
        )
    # Existing accounts count as confirmed (see the docstring).
    op.execute("UPDATE accounts SET confirmed_at = created_at")

    with op.batch_alter_table("accounts") as batch:
        batch.alter_column("fs_uniquifier", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("uq_accounts_fs_uniquifier", ["fs_uniquifier"])

    op.create_table(
        "roles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("permissions", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "account_roles",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["role_id"], ["roles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "role_id"),
    )


def downgrade():
    op.drop_table("account_roles")
    op.drop_table("roles")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("uq_accounts_fs_uniquifier", type_="unique")
        for column in (
            "mf_recovery_codes",
            "tf_phone_number",
            "tf_totp_secret",
            "tf_primary_method",
            "login_count",
            "current_login_ip",
            "last_login_ip",
            "current_login_at",
            "last_login_at",
            "confirmed_at",
            "fs_uniquifier",
            "active",
        ):
            batch.drop_column(column)
