"""After a SECRET_KEY rotation: what was encrypted under keys derived from an old value (in
SECRET_KEY_FALLBACKS or RETIRED_SECRET_KEYS) is rewritten under the new one, so the old value can
then be removed.

Webhook signing secrets, two-factor recovery codes and TOTP secrets (those move to TOTP_SECRET when
it is set, levqor_core.accounts.totp)."""

from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from flask import current_app

from levqor_core.accounts import totp
from levqor_core.accounts.models import Account
from levqor_core.accounts.security import security
from levqor_core.derived_keys import secret_keys
from levqor_core.extensions import db
from levqor_core.webhooks import secrets as webhook_secrets
from levqor_core.webhooks.models import WebhookEndpoint


@dataclass
class ReEncrypted:
    webhook_secrets: int = 0
    accounts_with_recovery_codes: int = 0
    totp_secrets: int = 0
    unreadable: int = 0  # encrypted under a key no setting names any more (left as it is)


def re_encrypt_all() -> ReEncrypted:
    """Rewrite every webhook secret, recovery code and TOTP secret under the current key, rows locked;
    one commit."""
    keys = secret_keys(current_app.config)
    done = ReEncrypted()
    # Rows are locked while rewritten: a recovery code spent, a new set shown or a new authenticator
    # set up meanwhile is not overwritten with what was read before it.
    for endpoint in db.session.scalars(sa.select(WebhookEndpoint).with_for_update()):
        try:
            endpoint.secret_encrypted = webhook_secrets.re_encrypted(endpoint.secret_encrypted, keys)
            done.webhook_secrets += 1
        except InvalidToken:
            done.unreadable += 1
    cryptor = security.mf_recovery_codes_util.cryptor  # SECRET_KEY's key first, then the older values'
    # (In SQL text: the column's type, Flask-Security-Too's AsaList, is not cacheable in a statement.)
    for account in db.session.scalars(
        sa.select(Account).where(sa.text("mf_recovery_codes IS NOT NULL")).with_for_update()
    ):
        try:
            account.mf_recovery_codes = [cryptor.rotate(code.encode()).decode() for code in account.mf_recovery_codes]
            done.accounts_with_recovery_codes += 1
        except InvalidToken:
            done.unreadable += 1
    known_tags = set(totp.totp_secrets(current_app.config))
    # Tag "1" names TOTP_SECRET or SECRET_KEY as set now: right for a secret stored before a rotation
    # only while no older key is configured (passlib cannot tell a wrong key from a right one).
    legacy_certain = len(totp.totp_keys(current_app.config)) == 1
    for account in db.session.scalars(sa.select(Account).where(Account.tf_totp_secret.isnot(None)).with_for_update()):
        tag = totp.stored_tag(account.tf_totp_secret)
        if tag not in known_tags or (tag == totp.LEGACY_TAG and not legacy_certain):
            done.unreadable += 1
            continue
        account.tf_totp_secret = security.totp_factory.re_encrypted(account.tf_totp_secret)
        done.totp_secrets += 1
    db.session.commit()
    return done
