"""operators by role: the confirmed accounts listed in OPS_EMAILS get the `ops` role

/developer/ops now checks the role only. So that no deploy locks its team out, the accounts that
OPS_EMAILS let in until now (confirmed ones with a listed address) are given the role here, once;
unconfirmed accounts with a listed address get nothing (anyone can sign up with any address).
After this, OPS_EMAILS is not read: `flask accounts grant-role EMAIL ops` names operators.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

accounts = sa.table(
    "accounts", sa.column("id", sa.Integer), sa.column("email", sa.String), sa.column("confirmed_at", sa.DateTime)
)
roles = sa.table("roles", sa.column("id", sa.Integer), sa.column("name", sa.String), sa.column("description", sa.String))
account_roles = sa.table("account_roles", sa.column("account_id", sa.Integer), sa.column("role_id", sa.Integer))


def upgrade():
    listed = {e.strip().lower() for e in current_app.config.get("OPS_EMAILS", "").split(",") if e.strip()}
    if not listed:
        return
    connection = op.get_bind()
    operators = connection.execute(
        sa.select(accounts.c.id).where(sa.func.lower(accounts.c.email).in_(listed), accounts.c.confirmed_at.isnot(None))
    ).scalars().all()
    if not operators:
        return
    role_id = connection.execute(sa.select(roles.c.id).where(roles.c.name == "ops")).scalar()
    if role_id is None:
        connection.execute(roles.insert().values(name="ops", description="Operators: /developer/ops"))
        role_id = connection.execute(sa.select(roles.c.id).where(roles.c.name == "ops")).scalar()
    holders = set(connection.execute(sa.select(account_roles.c.account_id).where(account_roles.c.role_id == role_id)).scalars())
    for account_id in operators:
        if account_id not in holders:
            connection.execute(account_roles.insert().values(account_id=account_id, role_id=role_id))


def downgrade():
    pass  # roles granted here stay: they are indistinguishable from roles granted by hand
