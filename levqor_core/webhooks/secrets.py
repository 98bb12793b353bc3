"""Endpoint signing secrets: made in the Standard Webhooks format (`whsec_` + base64 of 24 random
bytes), stored only encrypted (Fernet, with a key derived from SECRET_KEY), decrypted to sign.
`secret_keys` is SECRET_KEY, or it and its older values (levqor_core.derived_keys.secret_keys)."""

import base64
import secrets

from cryptography.fernet import MultiFernet

from levqor_core.derived_keys import multi_fernet

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _fernet(secret_keys: str | list[str]) -> MultiFernet:
    return multi_fernet(secret_keys, "webhook secrets")


def encrypt(secret: str, secret_keys: str | list[str]) -> str:
    return _fernet(secret_keys).encrypt(secret.encode()).decode()


def decrypt(token: str, secret_keys: str | list[str]) -> str:
    return _fernet(secret_keys).decrypt(token.encode()).decode()


def re_encrypted(token: str, secret_keys: list[str]) -> str:
    """The same secret, encrypted under the first key (raises InvalidToken if none of them reads it)."""
    return _fernet(secret_keys).rotate(token.encode()).decode()
