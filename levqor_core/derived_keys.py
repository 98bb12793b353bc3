"""Encryption keys derived from SECRET_KEY, one per use, so no key doubles as another."""

import base64
import hashlib


def fernet_key(secret_key: str, purpose: str) -> bytes:
    """A Fernet key for `purpose` (e.g. "webhook secrets"): what it encrypts cannot be read, or
    forged, with a key derived for any other purpose or with SECRET_KEY's signatures."""
    derived = hashlib.sha256(f"levqor {purpose}\x00".encode() + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(derived)
