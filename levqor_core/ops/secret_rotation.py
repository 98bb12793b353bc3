"""After a SECRET_KEY rotation: what was encrypted under keys derived from an old value (in
SECRET_KEY_FALLBACKS) is rewritten under the new one, so the fallback can then be removed.

Webhook signing secrets and two-factor recovery codes are covered; a TOTP secret is encrypted
with TOTP_SECRET (README "Accounts")."""

from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from flask import current_app

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
    unreadable: int = 0  # encrypted under a key that is in neither SECRET_KEY nor its fallbacks


def re_encrypt_all() -> ReEncrypted:
    """Rewrite every webhook secret and recovery code under the current SECRET_KEY; one commit."""
    keys = secret_keys(current_app.config)
    done = ReEncrypted()
    for endpoint in db.session.scalars(sa.select(WebhookEndpoint)):
        try:
            endpoint.secret_encrypted = webhook_secrets.re_encrypted(endpoint.secret_encrypted, keys)
            done.webhook_secrets += 1
        except InvalidToken:
            done.unreadable += 1
    cryptor = security.mf_recovery_codes_util.cryptor  # SECRET_KEY's key first, then the fallbacks'
    # (In SQL text: the column's type, Flask-Security-Too's AsaList, is not cacheable in a statement.)
    for account in db.session.scalars(sa.select(Account).where(sa.text("mf_recovery_codes IS NOT NULL"))):
        try:
            account.mf_recovery_codes = [cryptor.rotate(code.encode()).decode() for code in account.mf_recovery_codes]
            done.accounts_with_recovery_codes += 1
        except InvalidToken:
            done.unreadable += 1
    db.session.commit()
    return done
