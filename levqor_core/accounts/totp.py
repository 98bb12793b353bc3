"""Authenticator codes work once (RFC 6238, section 5.2).

Flask-Security-Too accepts a code for as long as SECURITY_TWO_FACTOR_AUTHENTICATOR_VALIDITY allows
(two minutes either side), as often as it is sent: a code seen over a shoulder or in a screen share
would log in again. Its Totp class leaves the fix to a subclass: the last time step used per account,
which passlib then refuses along with every earlier one. The step is claimed atomically in Redis,
so the same code sent twice at once logs in once.

While Redis is down a code can be reused within its validity (logged): two-factor sign-in keeps
working, as the rest of the portal does."""

import logging

import redis
from flask import current_app
from flask_security import Totp
from passlib.exc import UsedTokenError

log = logging.getLogger(__name__)

KEY = "lvq:totp-step:{}"
# Claims the step if it is later than the last one claimed; 0 if it is not.
_CLAIM = """
local last = redis.call('GET', KEYS[1])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def _redis():
    return current_app.extensions["levqor.redis"]


def _remembered_seconds() -> int:
    # A step is refused for as long as any code of it could still be accepted, and then some.
    return 2 * int(current_app.config["SECURITY_TWO_FACTOR_AUTHENTICATOR_VALIDITY"]) + 60


class OnceOnlyTotp(Totp):
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
