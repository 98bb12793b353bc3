"""Rotating SECRET_KEY: with the old value in SECRET_KEY_FALLBACKS, sessions, webhook signing and
recovery codes keep working; `flask secrets re-encrypt` moves what was encrypted to the new key,
after which the old value can go. Each app here is one deploy of the same SQLite database."""

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from flask_migrate import upgrade
from standardwebhooks.webhooks import Webhook

from levqor_core.accounts.models import Account
from levqor_core.accounts.security import security
from levqor_core.app import create_app
from levqor_core.derived_keys import secret_keys
from levqor_core.extensions import db
from levqor_core.webhooks import dispatch, service
from levqor_core.webhooks import secrets as webhook_secrets
from levqor_core.webhooks.models import WebhookEndpoint

from .webhook_helpers import Receiver

OLD, NEW = "old-secret-key-value", "new-secret-key-value"


@pytest.fixture
def deploy(tmp_path, redis_server):
    """deploy(SECRET_KEY, *fallbacks): the app as started with those settings, on one database."""

    def start(secret_key: str, *fallbacks: str):
        return create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'rotation.db'}",
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": secret_key,
                "SECRET_KEY_FALLBACKS": list(fallbacks),
                "WEBHOOK_ALLOW_PRIVATE_TARGETS": True,
            }
        ).app

    return start


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def _readable(app, raw_secret: str, code: str) -> tuple[bool, bool]:
    """(the webhook secret decrypts to raw_secret, the recovery code is accepted) in this deploy."""
    with app.app_context():
        endpoint = db.session.scalar(sa.select(WebhookEndpoint))
        try:
            secret_ok = webhook_secrets.decrypt(endpoint.secret_encrypted, secret_keys(app.config)) == raw_secret
        except InvalidToken:
            secret_ok = False
        account = db.session.scalar(sa.select(Account))
        code_ok = security.mf_recovery_codes_util.check_recovery_code(account, code)
    return secret_ok, code_ok


def test_a_rotated_secret_key_keeps_sessions_webhooks_and_recovery_codes_until_re_encrypted(deploy, receiver):
    before = deploy(OLD)
    with before.app_context():
        upgrade()
        account = Account(email="rotation@example.com", password_hash="x", tier="pro", active=True)
        db.session.add(account)
        db.session.commit()
        _, raw_secret = service.create_endpoint(
            account, receiver.url(), ["job.succeeded"], sandbox=False, secret_key=OLD, allow_private=True
        )
        codes = security.mf_recovery_codes_util.create_recovery_codes(account)
        db.session.commit()
    cookie = before.session_interface.get_signing_serializer(before).dumps({"signed": "before"})

    rotated = deploy(NEW, OLD)
    assert rotated.session_interface.get_signing_serializer(rotated).loads(cookie) == {"signed": "before"}
    assert _readable(rotated, raw_secret, codes[0]) == (True, True)
    assert _readable(deploy(NEW), raw_secret, codes[0]) == (False, False)  # the fallback is what reads them
    # A delivery signed in the rotated deploy verifies with the secret its owner was shown.
    with rotated.app_context():
        account = db.session.scalar(sa.select(Account))
        delivery_id = service.record_event(account.id, "job.succeeded", {"id": "job_1"}, sandbox=False)[0]
        db.session.commit()
        assert dispatch.attempt(delivery_id, now=datetime.now(UTC)) == "succeeded"
    got = receiver.received[0]
    Webhook(raw_secret).verify(got["body"], got["headers"])

    result = rotated.test_cli_runner().invoke(args=["secrets", "re-encrypt"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted 1 webhook secret(s) and the recovery codes of 1 account(s)" in result.output
    # The old value can go now.
    assert _readable(deploy(NEW), raw_secret, codes[1]) == (True, True)
    assert _readable(deploy(OLD), raw_secret, codes[1]) == (False, False)  # and it no longer reads them


def test_re_encrypt_fails_loudly_when_something_is_under_an_unknown_key(deploy):
    before = deploy(OLD)
    with before.app_context():
        upgrade()
        account = Account(email="lost@example.com", password_hash="x", tier="pro", active=True)
        db.session.add(account)
        db.session.commit()
        service.create_endpoint(
            account, "http://127.0.0.1:9/hook", ["job.succeeded"], sandbox=False, secret_key=OLD, allow_private=True
        )
    result = deploy(NEW).test_cli_runner().invoke(args=["secrets", "re-encrypt"])  # the old value forgotten
    assert result.exit_code != 0 and "1 could not be read" in result.output
    assert _readable(deploy(OLD), service.secrets.decrypt(_stored(before), OLD), "none")[0]  # left as it was


def _stored(app) -> str:
    with app.app_context():
        return db.session.scalar(sa.select(WebhookEndpoint.secret_encrypted))
