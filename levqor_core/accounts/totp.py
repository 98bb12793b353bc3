"""Authenticator codes work once (RFC 6238, section 5.2), and the secrets behind them can move to a
new key.

Flask-Security-Too accepts a code for as long as SECURITY_TWO_FACTOR_AUTHENTICATOR_VALIDITY allows
(two minutes either side), as often as it is sent: a code seen over a shoulder or in a screen share
would log in again. Its Totp class leaves the fix to a subclass: the last time step used per account,
which passlib then refuses along with every earlier one. The step is claimed atomically in Redis,
so the same code sent twice at once logs in once.

While Redis is down a code can be reused within its validity (logged): two-factor sign-in keeps
working, as the rest of the portal does.

Each account's TOTP secret is stored encrypted (passlib: AES-CTR, with no integrity check, so a
wrong key decrypts to a wrong secret without an error). Each stored secret names its key by a tag;
the tag here is a fingerprint of the key, so it cannot name another key after a rotation. Tag "1",
the only one before (migration 0012 re-tags those), is TOTP_SECRET or, unset, SECRET_KEY."""

import hashlib
import json
import logging
from collections.abc import Mapping

import redis
from flask import current_app
from flask_security import Totp
from passlib.exc import UsedTokenError
from passlib.totp import TOTP

from levqor_core.derived_keys import secret_keys

log = logging.getLogger(__name__)

KEY = "lvq:totp-step:{}"
# Claims the step if it is later than the last one claimed; 0 if it is not.
_CLAIM = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


LEGACY_TAG = "1"


def tag_of(key: str) -> str:
    return "k" + hashlib.sha256(b"levqor totp key\x00" + key.encode()).hexdigest()[:16]


def totp_keys(config: Mapping) -> list[str]:
    """The keys TOTP secrets may be encrypted under, the one new secrets use first: TOTP_SECRET when
    set, then SECRET_KEY and its older values (so either can be rotated, README "Rotating SECRET_KEY")."""
    keys = [config["TOTP_SECRET"]] if config.get("TOTP_SECRET") else []
    return keys + [key for key in secret_keys(config) if key not in keys]


def legacy_key(config: Mapping) -> str:
    return config.get("TOTP_SECRET") or config["SECRET_KEY"]


def totp_secrets(config: Mapping) -> dict[str, str]:
    """SECURITY_TOTP_SECRETS: by fingerprint tag, the new secrets' key first, then the legacy tag."""
    return {tag_of(key): key for key in totp_keys(config)} | {LEGACY_TAG: legacy_key(config)}


def stored_tag(stored: str) -> str | None:
    """The tag a stored TOTP secret (Flask-Security-Too's JSON) was encrypted under."""
    try:
        return json.loads(stored)["enckey"]["t"]
    except (ValueError, KeyError, TypeError):
        return None


def _redis():
    return current_app.extensions["levqor.redis"]


def _remembered_seconds() -> int:
    # A step is refused for as long as any code of it could still be accepted, and then some.
    return 2 * int(current_app.config["SECURITY_TWO_FACTOR_AUTHENTICATOR_VALIDITY"]) + 60


class OnceOnlyTotp(Totp):
    def __init__(self, secrets: dict, issuer: str):
        super().__init__(secrets, issuer)
        # passlib would encrypt under the largest tag; new secrets use the first key instead.
        self._totp = TOTP.using(issuer=issuer, secrets=secrets, default_tag=next(iter(secrets)))

    def verify_totp(self, token, totp_secret, user, window=0) -> bool:
        try:
            return super().verify_totp(token, totp_secret, user, window)
        except (KeyError, ValueError, TypeError) as err:  # passlib: a key no longer configured, or no secret
            log.error("account %s: its TOTP secret cannot be read (%s); was its key removed?", user.id, err)
            return False

    def re_encrypted(self, stored: str) -> str:
        """The same TOTP secret, encrypted under the first key."""
        return self._totp.from_source(stored).to_json(encrypt=True)

    def get_last_counter(self, user) -> int | None:
        try:
            last = _redis().get(KEY.format(user.id))
        except redis.RedisError as err:
            log.warning("authenticator codes may be reused while Redis is down: %s", err)
            return None
        return int(last) if last is not None else None

    def set_last_counter(self, user, tmatch) -> None:
        try:
            claimed = _redis().eval(_CLAIM, 1, KEY.format(user.id), tmatch.counter, _remembered_seconds())
        except redis.RedisError as err:
            log.warning("authenticator code accepted without its reuse check, Redis is down: %s", err)
            return
        if not claimed:  # the same code, sent again while the first was being checked
            # Raised inside Totp.verify_totp's try, which answers False for any TokenError.
            raise UsedTokenError(expire_time=tmatch.expire_time)
