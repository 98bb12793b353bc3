"""Rotating SECRET_KEY: with the old value in SECRET_KEY_FALLBACKS, sessions, webhook signing and
recovery codes keep working; `flask secrets re-encrypt` moves what was encrypted to the new key,
after which the old value can go. Each app here is one deploy of the same SQLite database."""

from datetime import UTC, datetime

import pyotp
import pytest
import redis
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

from .helpers import fresh_code
from .webhook_helpers import Receiver

OLD, NEW = "old-secret-key-value", "new-secret-key-value"


@pytest.fixture
def deploy(tmp_path, redis_server):
    """deploy(SECRET_KEY, *fallbacks): the app as started with those settings, on one database."""
    redis.Redis.from_url(redis_server.url).flushdb()  # e.g. the TOTP steps used by another test's account 1

    def start(secret_key: str, *fallbacks: str, retired: tuple[str, ...] = ()):
        return create_app(
            {
                "TESTING": True,
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'rotation.db'}",
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": secret_key,
                "SECRET_KEY_FALLBACKS": list(fallbacks),
                "RETIRED_SECRET_KEYS": list(retired),
                "WEBHOOK_ALLOW_PRIVATE_TARGETS": True,
            }
        ).app

    return start


@pytest.fixture
def receiver():
    made = Receiver()
    yield made
    made.close()


def _readable(app, raw_secret: str, code: str, authenticator: pyotp.TOTP | None = None) -> tuple[bool, ...]:
    """(the webhook secret decrypts to raw_secret, the recovery code is accepted[, a fresh code from
    the authenticator is accepted]) in this deploy."""
    with app.app_context():
        endpoint = db.session.scalar(sa.select(WebhookEndpoint))
        try:
            secret_ok = webhook_secrets.decrypt(endpoint.secret_encrypted, secret_keys(app.config)) == raw_secret
        except InvalidToken:
            secret_ok = False
        account = db.session.scalar(sa.select(Account))
        code_ok = security.mf_recovery_codes_util.check_recovery_code(account, code)
        if authenticator is None:
            return secret_ok, code_ok
        totp_ok = security.totp_factory.verify_totp(
            fresh_code(authenticator), account.tf_totp_secret, account, window=120
        )
    return secret_ok, code_ok, totp_ok


def _before_rotation(deploy, receiver):
    """The deploy on the old key, with an account that has a webhook endpoint, recovery codes and an
    authenticator: (the app, the endpoint's secret, the codes, the authenticator app)."""
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
        account.tf_totp_secret = security.totp_factory.generate_totp_secret()
        account.tf_primary_method = "authenticator"
        db.session.commit()
        authenticator = pyotp.TOTP(security.totp_factory._totp.from_source(account.tf_totp_secret).base32_key)
    return before, raw_secret, codes, authenticator


def test_a_rotated_secret_key_keeps_sessions_webhooks_and_recovery_codes_until_re_encrypted(deploy, receiver):
    before, raw_secret, codes, authenticator = _before_rotation(deploy, receiver)
    cookie = before.session_interface.get_signing_serializer(before).dumps({"signed": "before"})

    rotated = deploy(NEW, OLD)
    assert rotated.session_interface.get_signing_serializer(rotated).loads(cookie) == {"signed": "before"}
    assert _readable(rotated, raw_secret, codes[0], authenticator) == (True, True, True)
    # The fallback is what reads them.
    assert _readable(deploy(NEW), raw_secret, codes[0], authenticator) == (False, False, False)
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
    assert "re-encrypted 1 webhook secret(s), the recovery codes of 1 account(s) and 1 two-factor" in result.output
    # The old value can go now.
    assert _readable(deploy(NEW), raw_secret, codes[1], authenticator) == (True, True, True)
    assert _readable(deploy(OLD), raw_secret, codes[1], authenticator) == (False, False, False)  # nor reads them


def test_re_encrypt_fails_loudly_and_changes_nothing_under_an_unknown_key(deploy, receiver):
    _, raw_secret, codes, authenticator = _before_rotation(deploy, receiver)
    result = deploy(NEW).test_cli_runner().invoke(args=["secrets", "re-encrypt"])  # the old value forgotten
    # The webhook secret, the recovery codes and the TOTP secret: each left as it was.
    assert result.exit_code != 0 and "3 could not be read" in result.output
    assert _readable(deploy(OLD), raw_secret, codes[0], authenticator) == (True, True, True)


def test_migration_0012_tags_each_stored_totp_secret_with_its_keys_fingerprint(deploy):
    from passlib.totp import TOTP

    from levqor_core.accounts import totp

    app = deploy(OLD)
    legacy = TOTP.using(secrets={"1": OLD}, default_tag="1")  # how secrets were stored before 0012
    enrolled = legacy.new()
    with app.app_context():
        upgrade(revision="0011")
        account = Account(email="enrolled@example.com", password_hash="x", tier="pro", active=True)
        account.tf_totp_secret = enrolled.to_json(encrypt=True)
        account.tf_primary_method = "authenticator"
        db.session.add(account)
        db.session.commit()
        assert totp.stored_tag(account.tf_totp_secret) == "1"
        upgrade()
        db.session.refresh(account)
        assert totp.stored_tag(account.tf_totp_secret) == totp.tag_of(OLD)
        authenticator = pyotp.TOTP(enrolled.base32_key)
        assert security.totp_factory.verify_totp(fresh_code(authenticator), account.tf_totp_secret, account, window=120)
    # A rotation no longer misreads it: tag_of(OLD) names the old key whatever SECRET_KEY is now.
    rotated = deploy(NEW, OLD)
    with rotated.app_context():
        account = db.session.scalar(sa.select(Account))
        assert security.totp_factory.verify_totp(fresh_code(authenticator), account.tf_totp_secret, account, window=120)


def test_after_a_leak_a_retired_key_still_decrypts_but_nothing_it_signed_is_accepted(deploy, receiver):
    from itsdangerous import BadSignature

    before, raw_secret, codes, _ = _before_rotation(deploy, receiver)
    forged = before.session_interface.get_signing_serializer(before).dumps({"_user_id": "anyone"})

    after_leak = deploy(NEW, retired=(OLD,))
    with pytest.raises(BadSignature):  # a session made with the leaked key is refused
        after_leak.session_interface.get_signing_serializer(after_leak).loads(forged)
    assert _readable(after_leak, raw_secret, codes[0]) == (True, True)
    assert after_leak.test_cli_runner().invoke(args=["secrets", "re-encrypt"]).exit_code == 0
    assert _readable(deploy(NEW), raw_secret, codes[1]) == (True, True)
