"""Flask-Security-Too wired to the portal: settings, the datastore, and the one door mail goes out by.

Flask-Security-Too does the account lifecycle (hashing, confirmation and reset tokens, sessions
keyed by `fs_uniquifier`, two-factor); this module only configures it. Settings are defaults: the
app's config (and so tests) can override any `SECURITY_*` key.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from flask import Flask, current_app
from flask_security import LoginForm, Security, SQLAlchemyUserDatastore
from flask_security.signals import change_email_confirmed
from flask_security.utils import aware_utcnow, send_mail
from werkzeug.local import LocalProxy

from levqor_core.accounts import sessions, sign_ins
from levqor_core.accounts.mail import PortalMail
from levqor_core.accounts.models import Account, Role
from levqor_core.accounts.reauth import VerifyWithSecondFactorForm
from levqor_core.accounts.totp import OnceOnlyTotp, totp_secrets
from levqor_core.derived_keys import fernet_key, secret_keys
from levqor_core.extensions import db

log = logging.getLogger(__name__)

MIN_PASSWORD = 8
# The app's extension, one per app: Flask-Security-Too keeps per-app state on it (its datastore,
# the TOTP and recovery-code keys derived from that app's SECRET_KEY), so a second app in the same
# process (the tests build several) must not re-initialise the first one's.
security: Security = LocalProxy(lambda: current_app.extensions["security"])
CONFIRM_WITHIN = timedelta(days=1)
RESET_WITHIN = timedelta(hours=1)


def recovery_codes_key(secret_key: str) -> bytes:
    return fernet_key(secret_key, "recovery codes")


def settings(config: dict) -> dict:
    """Flask-Security-Too's settings for this app (README "Accounts")."""
    return {
        # Tokens in mail links are signed with SECRET_KEY and this salt.
        "SECURITY_PASSWORD_SALT": config.get("SECURITY_PASSWORD_SALT") or config["SECRET_KEY"],
        # The hashes stored before Flask-Security-Too are argon2-cffi's of the bare password; by
        # default Flask-Security-Too would HMAC the password with the salt first and never match them.
        "SECURITY_PASSWORD_SINGLE_HASH": True,
        "SECURITY_PASSWORD_HASH": "argon2",
        # argon2id with the OWASP Password Storage Cheat Sheet's first configuration (m=19 MiB, t=2,
        # p=1), as before; hashes with other parameters verify and are rehashed at the next log-in.
        "SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS": {
            "argon2__type": "ID",
            "argon2__memory_cost": 19 * 1024,
            "argon2__rounds": 2,
            "argon2__parallelism": 1,
        },
        "SECURITY_PASSWORD_LENGTH_MIN": MIN_PASSWORD,
        "SECURITY_PASSWORD_COMPLEXITY_CHECKER": "zxcvbn",
        "SECURITY_PASSWORD_CONFIRM_REQUIRED": False,
        # email-validator would ask DNS whether the domain takes mail: slow, and fails offline.
        "SECURITY_EMAIL_VALIDATOR_ARGS": {"check_deliverability": False},
        "SECURITY_LOGIN_URL": "/login",
        "SECURITY_LOGOUT_METHODS": None,  # /logout is the portal's own (it also ends other sessions)
        "SECURITY_REGISTERABLE": False,  # /signup is the portal's own view on Flask-Security-Too's core
        "SECURITY_CONFIRMABLE": True,
        "SECURITY_LOGIN_WITHOUT_CONFIRMATION": True,  # docs and keys page yes; key creation no
        "SECURITY_CONFIRM_EMAIL_WITHIN": CONFIRM_WITHIN,
        "SECURITY_AUTO_LOGIN_AFTER_CONFIRM": False,
        "SECURITY_RECOVERABLE": True,
        "SECURITY_RESET_PASSWORD_WITHIN": RESET_WITHIN,
        "SECURITY_CHANGEABLE": True,
        "SECURITY_CHANGE_URL": "/developer/account/password",
        "SECURITY_TRACKABLE": True,
        "SECURITY_CHANGE_EMAIL": True,  # takes effect once the link sent to the new address is opened
        "SECURITY_CHANGE_EMAIL_URL": "/developer/account/email",
        "SECURITY_CHANGE_EMAIL_WITHIN": CONFIRM_WITHIN,
        "SECURITY_POST_CHANGE_EMAIL_VIEW": "/developer/account",
        "SECURITY_VERIFY_URL": "/developer/account/verify",
        # Two-factor sign-in with an authenticator app (TOTP), optional per account, and recovery codes.
        "SECURITY_TWO_FACTOR": True,
        "SECURITY_TWO_FACTOR_ENABLED_METHODS": ["authenticator"],
        "SECURITY_TWO_FACTOR_REQUIRED": False,
        "SECURITY_TWO_FACTOR_RESCUE_EMAIL": False,  # recovery codes instead
        "SECURITY_TWO_FACTOR_SETUP_URL": "/developer/account/two-factor",
        "SECURITY_TWO_FACTOR_POST_SETUP_VIEW": "/developer/account",
        "SECURITY_TOTP_ISSUER": "Levqor",
        # The keys of the TOTP secrets stored with each account, by fingerprint tag (accounts/totp.py).
        "SECURITY_TOTP_SECRETS": totp_secrets(config),
        "SECURITY_MULTI_FACTOR_RECOVERY_CODES": True,
        # Stored encrypted (a database dump alone does not sign anyone in); shown again on request.
        # The first key encrypts; older SECRET_KEY values (derived_keys.secret_keys) still read old codes.
        "SECURITY_MULTI_FACTOR_RECOVERY_CODES_KEYS": [recovery_codes_key(key) for key in secret_keys(config)],
        "SECURITY_MULTI_FACTOR_RECOVERY_CODES_URL": "/developer/account/recovery-codes",
        "SECURITY_RETURN_GENERIC_RESPONSES": True,
        # Its pages show secrets (the authenticator secret, recovery codes, a reset form). Its default,
        # {"private": True, "no-store": True}, is set item by item on Werkzeug's cache-control
        # object, which since Werkzeug 3.1 writes `private=True, no-store=True`: Chromium did not
        # read that as no-store and showed a POSTed page again after Back. A directive without a
        # value is written as None.
        "SECURITY_CACHE_CONTROL": {"private": None, "no-store": None},
        "SECURITY_SEND_REGISTER_EMAIL": True,
        "SECURITY_POST_LOGIN_VIEW": "/developer",
        "SECURITY_POST_CONFIRM_VIEW": "/developer/api-keys",
        "SECURITY_POST_RESET_VIEW": "/login",
        "SECURITY_POST_CHANGE_VIEW": "/developer/api-keys",
        "SECURITY_EMAIL_SENDER": config.get("MAIL_FROM"),
        # What the mail links' tokens carry to bind them to the address or the password (itsdangerous
        # signs them). Flask-Security-Too's default, sha256_crypt at 535,000 rounds in pure Python,
        # took ~250 ms of CPU per link: forgot password answered a known address that much later
        # than an unknown one, and every request for a link held a request thread. Links mailed
        # before still verify (sha256_crypt stays accepted).
        "SECURITY_HASHING_SCHEMES": ["hex_sha256", "sha256_crypt"],
        "SECURITY_DEPRECATED_HASHING_SCHEMES": ["sha256_crypt"],
        "SECURITY_FRESHNESS": timedelta(minutes=15),
        "SECURITY_FRESHNESS_GRACE_PERIOD": timedelta(0),
        # The portal signs in with its session cookie only (see _no_token_sign_in).
        "SECURITY_API_ENABLED_METHODS": ["session"],
        "SECURITY_FRESHNESS_ALLOW_AUTH_TOKEN": False,
        # The app's own CSRF check (levqor_core.app) covers every cookie-authenticated POST.
        "SECURITY_CSRF_IGNORE_UNAUTH_ENDPOINTS": False,
        "SECURITY_MSG_GENERIC_AUTHN_FAILED": ("That email and password do not match an account.", "error"),
        "SECURITY_MSG_PASSWORD_INVALID_LENGTH": ("Use a password of at least %(length)s characters.", "error"),
        "SECURITY_MSG_PASSWORD_TOO_SIMPLE": ("That password is too easy to guess: add another word or two.", "error"),
        "SECURITY_MSG_INVALID_CONFIRMATION_TOKEN": (
            "That confirmation link is not valid. Ask for a new one below.",
            "error",
        ),
        "SECURITY_MSG_CONFIRMATION_EXPIRED": (
            "That confirmation link has expired (links work for %(within)s). Ask for a new one below.",
            "error",
        ),
        "SECURITY_MSG_CHANGE_EMAIL_CONFIRMED": (
            "Your email address is changed, and every session was signed out: log in with the new address.",
            "success",
        ),
        # Flask-Security-Too's answer to a change-email link that is not valid (used, or a newer one
        # sent), and to a two-factor setup page that has expired: its own words were "Input not
        # appropriate for requested API".
        "SECURITY_MSG_API_ERROR": (
            "That link or page is not valid any more (each link works once): start again.",
            "error",
        ),
        "SECURITY_MSG_INVALID_RESET_PASSWORD_TOKEN": (
            "That reset link is not valid any more: each link works once. Ask for a new one below.",
            "error",
        ),
        "SECURITY_MSG_PASSWORD_RESET_EXPIRED": (
            "That reset link has expired (links work for %(within)s). Ask for a new one below.",
            "error",
        ),
    }


EMAIL_CHANGED_SUBJECT = "Your Levqor email address was changed"


def _email_changed(app, user: Account, old_email: str, **_extra) -> None:
    """Once a new address is confirmed: every session ends (the browsers sign in again with the new
    address), links already mailed to the old one stop working (they name the session identifier),
    and the old address is told."""
    security.datastore.set_uniquifier(user)
    db.session.commit()  # before the notice: the old address hears only of a change that happened
    send_mail(EMAIL_CHANGED_SUBJECT, old_email, "security/email/email_changed_notice", user=user, old_email=old_email)


def _no_token_sign_in(_request) -> None:
    """Flask-Security-Too's authentication tokens sign nobody in. It mints one on request
    (`?include_auth_token`) and would accept it on every page for 15 minutes, outside the session
    checks: logging out would not end it. The portal has no use for them; API calls use API keys."""
    return None


# Hashes are computed by a pool of MAX_CONCURRENT_HASHES threads per process, and request threads
# wait for it: a burst of log-ins (10 at once are allowed per address) queues instead of adding
# 10 x 19 MiB to a 512 MB dyno. A pool rather than a semaphore, because glibc keeps a freed hash's
# memory in the arena of the thread that allocated it: hashing on any of Flask's 10 request threads
# left up to 10 x 19 MiB resident even with only 2 at a time (measured: +115 MiB instead of +40).
MAX_CONCURRENT_HASHES = 2
_hashing = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_HASHES, thread_name_prefix="argon2")


class PooledPasswordContext:
    """Flask-Security-Too's passlib context, its hashing and verifying run on the pool above."""

    POOLED = frozenset({"hash", "verify", "verify_and_update", "dummy_verify"})

    def __init__(self, context):
        self._context = context

    def __getattr__(self, name):
        attr = getattr(self._context, name)
        if name in self.POOLED:
            return lambda *args, **kwargs: _hashing.submit(attr, *args, **kwargs).result()
        return attr


class PortalLoginForm(LoginForm):
    """Flask-Security-Too's log-in form without "remember me" (accounts.sessions says why): a
    posted `remember=y` is not read."""

    remember = None


def init_app(app: Flask) -> Security:
    for key, value in settings(app.config).items():
        app.config.setdefault(key, value)
    if app.config.get("OPS_EMAILS"):
        log.warning(
            "OPS_EMAILS is read only by migration 0009; /developer/ops checks the ops role: "
            "run `flask accounts grant-role EMAIL ops`, then unset OPS_EMAILS"
        )
    sessions.init_app(app)  # first: its check must run before anything loads the user
    # Made here rather than in levqor_core.extensions: its mail goes out through the ops sender,
    # which imports the extensions.
    # Its re-authentication page asks for the second factor too (levqor_core.accounts.reauth).
    # Authenticator codes work once (levqor_core.accounts.totp).
    security = Security(
        mail_util_cls=PortalMail,
        login_form=PortalLoginForm,
        verify_form=VerifyWithSecondFactorForm,
        totp_cls=OnceOnlyTotp,
    )
    # Aware UTC times, like every other timestamp here (levqor_core.columns.UTCDateTime).
    security.init_app(app, SQLAlchemyUserDatastore(db, Account, Role), datetime_factory=aware_utcnow)
    security.pwd_context = PooledPasswordContext(security.pwd_context)
    app.login_manager.request_loader(_no_token_sign_in)
    change_email_confirmed.connect(_email_changed, app)
    sign_ins.init_app(app)

    @security.mail_context_processor
    def _links_from_the_public_url() -> dict:
        # Links in mail point at PUBLIC_BASE_URL, never the request's Host header (the client writes it).
        return {"public_base_url": current_app.config["PUBLIC_BASE_URL"]}

    return security
