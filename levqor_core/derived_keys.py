"""Encryption keys derived from SECRET_KEY, one per use, so no key doubles as another.

SECRET_KEY can be rotated (README "Rotating SECRET_KEY"): the old value goes into
SECRET_KEY_FALLBACKS (Flask's own setting: what it signed, sessions and mail links, stays valid) for
a planned rotation, or into RETIRED_SECRET_KEYS after a leak (nothing it signed is accepted any
more). Either way what was encrypted under it stays readable, and `flask secrets re-encrypt`
rewrites that under the new key, after which the old value can go."""

import base64
import hashlib
from collections.abc import Mapping

from cryptography.fernet import Fernet, MultiFernet


def fernet_key(secret_key: str, purpose: str) -> bytes:
    """A Fernet key for `purpose` (e.g. "webhook secrets"): what it encrypts cannot be read, or
    forged, with a key derived for any other purpose or with SECRET_KEY's signatures."""
    derived = hashlib.sha256(f"levqor {purpose}\x00".encode() + secret_key.encode()).digest()
    return base64.urlsafe_b64encode(derived)


def secret_keys(config: Mapping) -> list[str]:
    """SECRET_KEY, then the older values whose encrypted data is still read: SECRET_KEY_FALLBACKS
    and RETIRED_SECRET_KEYS."""
    return [
        config["SECRET_KEY"],
        *(config.get("SECRET_KEY_FALLBACKS") or []),
        *(config.get("RETIRED_SECRET_KEYS") or []),
    ]


def multi_fernet(keys: str | list[str], purpose: str) -> MultiFernet:
    """Encrypts with the key derived from the first of `keys`, decrypts with any of them."""
    keys = [keys] if isinstance(keys, str) else keys
    return MultiFernet([Fernet(fernet_key(key, purpose)) for key in keys])
