"""Endpoint signing secrets: made in the Standard Webhooks format (`whsec_` + base64 of 24 random
bytes), stored only encrypted (Fernet, with a key derived from SECRET_KEY), decrypted to sign."""

import base64
import hashlib
import secrets

from cryptography.fernet import Fernet

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _fernet(secret_key: str) -> Fernet:
    # A key of its own for this use, so a Fernet token never doubles as anything SECRET_KEY signs.
    derived = hashlib.sha256(b"levqor webhook secrets\x00" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt(secret: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(secret.encode()).decode()


def decrypt(token: str, secret_key: str) -> str:
    return _fernet(secret_key).decrypt(token.encode()).decode()
