"""two-factor recovery codes stored encrypted

Recovery codes saved before this migration are in clear; Flask-Security-Too now encrypts them
(SECURITY_MULTI_FACTOR_RECOVERY_CODES_KEYS, a key derived from SECRET_KEY) and would no longer
accept the clear ones, so each is encrypted here with the same key: codes people have printed
keep working. Downgrading decrypts them again.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op
from cryptography.fernet import Fernet, InvalidToken
from flask import current_app

from levqor_core.accounts.security import recovery_codes_key

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

accounts = sa.table("accounts", sa.column("id", sa.Integer), sa.column("mf_recovery_codes", sa.Text))


def _rewrite(change) -> None:
    fernet = Fernet(recovery_codes_key(current_app.config["SECRET_KEY"]))
    connection = op.get_bind()
    rows = connection.execute(sa.select(accounts.c.id, accounts.c.mf_recovery_codes).where(
        accounts.c.mf_recovery_codes.isnot(None)
    )).all()
    for account_id, stored in rows:
        codes = [change(fernet, code) for code in stored.split(",") if code]
        connection.execute(
            accounts.update().where(accounts.c.id == account_id).values(mf_recovery_codes=",".join(codes))
        )


def _encrypt(fernet: Fernet, code: str) -> str:
    try:
        fernet.decrypt(code.encode())
        return code  # already encrypted (the migration ran halfway before)
    except InvalidToken:
        return fernet.encrypt(code.encode()).decode()


def _decrypt(fernet: Fernet, code: str) -> str:
    try:
        return fernet.decrypt(code.encode()).decode()
    except InvalidToken:
        return code


def upgrade():
    _rewrite(_encrypt)


def downgrade():
    _rewrite(_decrypt)
