"""GitHub secret scanning's signatures: a report is ours to act on only if one of GitHub's
published P-256 keys signed its raw body (`Github-Public-Key-Identifier` names the key,
`Github-Public-Key-Signature` is the base64 DER ECDSA signature over SHA-256 of the body).

GitHub publishes the keys at GITHUB_SECRET_SCANNING_KEYS_URL as `{"public_keys": [{"key_identifier",
"key" (PEM), "is_current"}]}`. They are fetched once and kept per process; an identifier not among
them makes one refresh (GitHub adds a key before it signs with it), but at most one per
REFRESH_FLOOR_SECONDS, so a stranger sending made-up identifiers cannot make every report a
request to GitHub (whose unauthenticated limit is 60 an hour per address). The copy is also
refreshed once it is a day old, so a key GitHub withdrew stops verifying.
"""

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from levqor_core import problems

log = logging.getLogger(__name__)

DEFAULT_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"
REFRESH_FLOOR_SECONDS = 300.0
MAX_AGE_SECONDS = 24 * 3600.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_KEYS_RESPONSE_BYTES = 256 * 1024
MAX_IDENTIFIER_CHARS = 256
MAX_SIGNATURE_CHARS = 512  # a P-256 DER signature is at most 72 bytes: 96 base64 characters


class SignatureRefused(problems.Problem):
    status, slug, title = 401, "invalid-secret-scanning-signature", "Invalid secret-scanning signature"


class UnknownSigningKey(problems.Problem):
    status, slug, title = 401, "unknown-secret-scanning-key", "Unknown secret-scanning key"


class SigningKeysUnavailable(problems.Problem):
    """GitHub's keys could not be fetched: the report cannot be checked now (GitHub sends it again)."""

    status, slug, title = 503, "secret-scanning-keys-unavailable", "GitHub's signing keys are unavailable"


def fetch_keys(url: str) -> bytes:
    """GitHub's key document, as bytes (raises httpx.HTTPError or ValueError)."""
    headers = {"Accept": "application/json", "User-Agent": "levqor-secret-scanning"}
    with httpx.stream("GET", url, headers=headers, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as answer:
        answer.raise_for_status()
        body = bytearray()
        for chunk in answer.iter_bytes():
            body.extend(chunk)
            if len(body) > MAX_KEYS_RESPONSE_BYTES:
                raise ValueError(f"the key document is over {MAX_KEYS_RESPONSE_BYTES} bytes")
    return bytes(body)


def parse_keys(document: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """The P-256 keys of a key document by identifier; anything else in it is skipped (and logged)."""
    found: dict[str, ec.EllipticCurvePublicKey] = {}
    entries = json.loads(document).get("public_keys")
    if not isinstance(entries, list):
        raise ValueError("the key document has no public_keys list")
    for entry in entries:
        identifier, pem = (entry or {}).get("key_identifier"), (entry or {}).get("key")
        if not isinstance(identifier, str) or not isinstance(pem, str):
            continue
        try:
            key = load_pem_public_key(pem.encode())
        except ValueError:
            log.warning("GitHub signing key %.40s is not a PEM public key; skipped", identifier)
            continue
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            log.warning("GitHub signing key %.40s is not a P-256 key; skipped", identifier)
            continue
        found[identifier] = key
    return found


class GitHubKeys:
    """GitHub's secret-scanning signing keys, kept per process (thread-safe)."""

    def __init__(
        self,
        url: str = DEFAULT_KEYS_URL,
        *,
        refresh_floor: float = REFRESH_FLOOR_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
        fetch: Callable[[str], bytes] = fetch_keys,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.refresh_floor, self.max_age = refresh_floor, max_age
        self._fetch, self._clock = fetch, clock
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._fetched_at: float | None = None  # the last successful fetch
        self._tried_at: float | None = None  # the last attempt, successful or not
        self._last_failed = False
        self._lock = threading.Lock()
        self.fetches = 0  # attempts made, for tests and logs

    def key(self, identifier: str) -> ec.EllipticCurvePublicKey:
        """The key GitHub names `identifier`; raises UnknownSigningKey or SigningKeysUnavailable."""
        now = self._clock()
        key = self._keys.get(identifier)
        if key is not None and self._fetched_at is not None and now - self._fetched_at < self.max_age:
            return key
        with self._lock:
            key = self._keys.get(identifier)
            stale = self._fetched_at is None or now - self._fetched_at >= self.max_age
            if (key is None or stale) and (self._tried_at is None or now - self._tried_at >= self.refresh_floor):
                self._refresh(now)
                key = self._keys.get(identifier)
            if key is not None:
                return key
            if self._last_failed:
                # Whether GitHub has such a key is unknown: a 5xx makes GitHub send the report again.
                raise SigningKeysUnavailable(
                    "GitHub's secret-scanning keys could not be fetched; try again later.",
                    headers={"Retry-After": "60"},
                )
            raise UnknownSigningKey("Github-Public-Key-Identifier names none of GitHub's secret-scanning keys.")

    def _refresh(self, now: float) -> None:
        self._tried_at = now
        self.fetches += 1
        try:
            keys = parse_keys(self._fetch(self.url))
        except (httpx.HTTPError, ValueError) as err:
            self._last_failed = True
            log.warning("GitHub's secret-scanning keys not fetched from %s: %s", self.url, err)
            return
        self._keys, self._fetched_at, self._last_failed = keys, now, False
        log.info("GitHub's secret-scanning keys fetched: %s", ", ".join(sorted(k[:12] for k in keys)) or "none")

    def verify(self, body: bytes, identifier: str | None, signature: str | None) -> None:
        """Raise unless `signature` (base64 DER ECDSA P-256 / SHA-256) signs `body` with GitHub's key
        `identifier`."""
        if not signature or len(signature) > MAX_SIGNATURE_CHARS:
            raise SignatureRefused("Send the Github-Public-Key-Signature header: the body's signature.")
        if not identifier or len(identifier) > MAX_IDENTIFIER_CHARS:
            raise UnknownSigningKey("Send the Github-Public-Key-Identifier header that names GitHub's key.")
        try:
            der = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureRefused("Github-Public-Key-Signature is not base64.") from None
        key = self.key(identifier)
        try:
            key.verify(der, body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureRefused("The signature does not match the body.") from None
