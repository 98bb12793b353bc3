"""Endpoint signing secrets: made in the Standard Webhooks format (`whsec_` + base64 of 24 random
bytes), stored only encrypted (Fernet, with a key derived from SECRET_KEY), decrypted to sign."""

import base64
import secrets

from cryptography.fernet import Fernet

from levqor_core.derived_keys import fernet_key

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _fernet(secret_key: str) -> Fernet:
    return Fernet(fernet_key(secret_key, "webhook secrets"))


def encrypt(secret: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(secret.encode()).decode()


def decrypt(token: str, secret_key: str) -> str:
    return _fernet(secret_key).decrypt(token.encode()).decode()
