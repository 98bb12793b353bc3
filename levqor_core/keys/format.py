"""The API key format: `lvq_<32 hex of a UUID4>_<6 base-62 checksum>`, and its hash (all that is stored)."""

import hashlib
import re
import secrets
import uuid
import zlib

PREFIX = "lvq_"
KEY_RE = re.compile(r"^lvq_([0-9a-f]{32})_([0-9A-Za-z]{6})$")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def checksum(hex32: str) -> str:
    """Six base-62 digits of the CRC32 of the hex part: catches typos before any lookup."""
    n = zlib.crc32(hex32.encode())
    digits = []
    for _ in range(6):
        n, r = divmod(n, 62)
        digits.append(_B62[r])
    return "".join(reversed(digits))


def generate() -> str:
    hex32 = uuid.uuid4().hex
    return f"{PREFIX}{hex32}_{checksum(hex32)}"


def is_well_formed(raw: str) -> bool:
    match = KEY_RE.match(raw or "")
    return bool(match) and secrets.compare_digest(checksum(match.group(1)), match.group(2))


def hash_key(raw: str) -> str:
    # A fast hash is enough: keys carry 122 random bits, so there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


def hint(raw: str) -> str:
    return f"{raw[:8]}…{raw[-4:]}"
