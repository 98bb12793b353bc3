"""Re-authentication ("confirm it is you"): what a fresh log-in means here, and the form that makes one.

A session is *fresh* for `SECURITY_FRESHNESS` (15 minutes) after its last primary authentication,
which Flask-Security-Too stamps in the session (`fs_paa`) at a full log-in (the password, then the
second factor when the account has one) and at its re-authentication page (`SECURITY_VERIFY_URL`).
Flask-Security-Too's own re-authentication form asks for the password only, so with two-factor
sign-in on, a stolen session plus the password would have been as fresh as a full log-in. The form
below asks for the authenticator code (or a recovery code, spent) as well when the account has
two-factor on, so "fresh" means the same thing however it was reached: every sensitive action
(email change, two-factor and recovery-code settings, the emergency key replacement) relies on it.
"""

import functools
from datetime import timedelta

from flask import current_app, session
from flask_security import check_and_update_authn_fresh
from flask_security.forms import VerifyForm
from flask_security.proxies import _security
from flask_security.utils import get_message
from wtforms import StringField

CODE_LABEL = "Authenticator code or recovery code"


def fresh_log_in() -> bool:
    """Whether the signed-in session authenticated in full within `SECURITY_FRESHNESS` (no grace)."""
    return check_and_update_authn_fresh(current_app.config["SECURITY_FRESHNESS"], timedelta(0))


def keeps_freshness(view):
    """`view`, except that it leaves the session's freshness as it found it.

    Flask-Security-Too signs the browser in again after a password change (the account's new
    `fs_uniquifier` ended every session), and its `login_user` stamps the session as freshly
    authenticated: the current password alone would then have opened every action that wants the
    second factor too (turning two-factor off, new recovery codes, the email, Replace now)."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        before = session.get("fs_paa")
        try:
            return view(*args, **kwargs)
        finally:
            if before is None:
                session.pop("fs_paa", None)
            else:
                session["fs_paa"] = before

    return wrapped


def has_second_factor(account) -> bool:
    return bool(account.tf_primary_method)


class VerifyWithSecondFactorForm(VerifyForm):
    """Flask-Security-Too's re-authentication form, plus the second factor when the account has one."""

    code = StringField(CODE_LABEL)

    def validate(self, **kwargs) -> bool:
        if not super().validate(**kwargs):  # the password (a wrong one is counted as a failed authentication)
            return False
        if not has_second_factor(self.user):
            return True
        code = "".join((self.code.data or "").split())
        if not code:
            self.code.errors.append("Enter the code from your authenticator app, or one of your recovery codes.")
            return False
        if _security.totp_factory.verify_totp(
            token=code,
            totp_secret=self.user.tf_totp_secret,
            user=self.user,
            window=current_app.config["SECURITY_TWO_FACTOR_AUTHENTICATOR_VALIDITY"],
        ):
            return True
        codes = _security.mf_recovery_codes_util
        if current_app.config["SECURITY_MULTI_FACTOR_RECOVERY_CODES"] and codes.check_recovery_code(self.user, code):
            codes.delete_recovery_code(self.user, code)  # each works once; the verify view commits
            return True
        self.user.track_failed_authn("code", True)
        self.code.errors.append(get_message("TWO_FACTOR_INVALID_TOKEN")[0])
        return False
