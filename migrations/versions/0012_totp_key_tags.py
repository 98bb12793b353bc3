"""accounts.tf_totp_secret: each stored TOTP secret names its key by a fingerprint tag

Until now every TOTP secret was encrypted under tag "1", which meant TOTP_SECRET (or, unset,
SECRET_KEY) as configured at the time: after a rotation "1" would name the new key, and passlib's
encryption has no integrity check, so it would decrypt old secrets to wrong ones without an error.
Each is re-encrypted here under the same key (the one "1" names now, in this release's settings),
tagged with that key's fingerprint (levqor_core.accounts.totp.tag_of). Downgrading tags them "1"
again, under the same key.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from flask import current_app
from passlib.totp import TOTP

from levqor_core.accounts.totp import LEGACY_TAG, legacy_key, stored_tag, tag_of

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

accounts = sa.table("accounts", sa.column("id", sa.Integer), sa.column("tf_totp_secret", sa.String))


def _retag(from_tag: str, to_tag: str) -> None:
    key = legacy_key(current_app.config)
    factory = TOTP.using(secrets={from_tag: key, to_tag: key}, default_tag=to_tag)
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(accounts.c.id, accounts.c.tf_totp_secret).where(accounts.c.tf_totp_secret.isnot(None))
    ).all()
    for account_id, stored in rows:
        if stored_tag(stored) != from_tag:
            continue
        connection.execute(
            accounts.update()
            .where(accounts.c.id == account_id)
            .values(tf_totp_secret=factory.from_source(stored).to_json(encrypt=True))
        )


def upgrade():
    _retag(LEGACY_TAG, tag_of(legacy_key(current_app.config)))


def downgrade():
    _retag(tag_of(legacy_key(current_app.config)), LEGACY_TAG)
