"""Sign-up, log-in and log-out: Flask-Security-Too's core behind the portal's pages and limits.

Flask-Security-Too serves /login, /confirm, /reset and /developer/account/password itself, in the
portal's templates (portal/templates/security/); this module adds the portal's per-address limits to
its log-in and serves /signup and /logout, whose behaviour differs from its own (see each view).
"""

import functools
import time
from urllib.parse import urlsplit

from flask import current_app, flash, g, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user
from flask_security import logout_user
from flask_security.forms import LoginForm, RegisterFormV2
from flask_security.registerable import register_existing, register_user
from flask_security.utils import hash_password
from flask_security.views import login as security_login
from sqlalchemy.exc import IntegrityError

from levqor_core.accounts import reauth, sessions
from levqor_core.accounts import service as accounts
from levqor_core.extensions import db
from levqor_core.limits.gate import client_bucket
from levqor_core.web.limiter import limiter, limiter_callable

from . import bp


@limiter_callable(default="unknown")
def _client_ip() -> str:
    # IPv6 by its /64: one host is given the whole network, and counted per address it would never run out.
    return client_bucket(request.remote_addr) or "unknown"


@limiter_callable(default="unknown")
def _account_at_stake() -> str:
    """The account a code or password is being tried for: the signed-in one, or the one whose
    password was given and whose second factor is asked (Flask-Security-Too keeps it in the session)."""
    if current_user.is_authenticated:
        return f"account:{current_user.id}"
    return f"account-uniquifier:{session.get('tf_user_id')}"


@limiter_callable(default=False)
def _no_account_at_stake() -> bool:
    return not current_user.is_authenticated and "tf_user_id" not in session


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths: never an open redirect.
    # Browsers read "/\\evil.example" as "//evil.example", so backslashes and control characters are refused too.
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and not any(c == "\\" or ord(c) < 0x20 for c in target)
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("portal.developer")


@bp.get("/")
def index():
    return redirect(url_for("portal.developer"))


def _form_again(template: str, form_name: str, form_class):
    """A refused log-in or sign-up shows the wait in the form itself, like any other form error."""

    @limiter_callable(default=None)  # None: the app's plain 429 page
    def on_breach(limit):
        seconds = max(1, int(limit.reset_at - time.time() + 0.999))
        wait = f"{-(-seconds // 60)} minute(s)" if seconds >= 60 else f"{seconds} second(s)"
        error = f"Too many attempts from your network. Try again in {wait}."
        page = render_template(template, **{form_name: form_class(formdata=None)}, error=error)
        return make_response(page, 429)

    return on_breach


class SignupForm(RegisterFormV2):
    """Email and password only: no retyped password, no username."""

    password_confirm = None


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(
    "20 per hour",
    key_func=_client_ip,
    methods=["POST"],
    on_breach=_form_again("auth/signup.html", "form", SignupForm),
)
def signup():
    """Flask-Security-Too's registration, answered alike for a new and a taken address.

    Its own view signs a new account in at once, so the next page would tell a stranger whether the
    address was free; here both get the same "check your email" page, and a taken address is sent a
    "you already have an account" email instead (Flask-Security-Too's `register_existing`)."""
    form = SignupForm()
    if form.validate_on_submit():
        register_user(form)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            if accounts.by_email(form.email.data) is None:
                raise
            # The same address signed up at the same moment and is taken now: answered alike (the
            # confirmation queued for this attempt names no account, so its link is refused).
        return redirect(url_for("portal.check_email", next=request.args.get("next")))
    if request.method == "POST" and register_existing(form):
        # It hashes a dummy password, as registering hashes the new one; and a new account's INSERT
        # is matched by a write of the same kind, committed alike.
        if form.existing_email_user is not None:
            accounts.write_as_a_sign_up_does(form.existing_email_user)
        db.session.commit()
        return redirect(url_for("portal.check_email", next=request.args.get("next")))
    refused = request.method == "POST"
    # The form's own errors say what is wrong (shown by the template); this covers a missing CSRF token.
    error = "Enter a valid email address and a password." if refused and not form.errors else None
    return render_template("auth/signup.html", form=form, error=error), 400 if refused else 200


@bp.get("/signup/check-email")
def check_email():
    return render_template("auth/check_email.html", console_mail=not current_app.config.get("SMTP_HOST"))


@limiter.limit(
    "10 per minute",
    key_func=_client_ip,
    methods=["POST"],
    on_breach=_form_again("security/login_user.html", "login_user_form", LoginForm),
)
def login():
    """Flask-Security-Too's log-in view under the portal's per-address limit; a refused log-in is a 401.

    An off-site `next` is dropped (the log-in then lands on /developer) rather than refusing the
    form, as Flask-Security-Too would: the visitor did nothing wrong."""
    target = request.args.get("next")
    if target and _safe_next(target) != target:
        args = request.args.copy()
        args.pop("next")
        request.args = args
    response = make_response(security_login())
    if request.method == "POST" and response.status_code == 200:
        response.status_code = 401
    return response


# Wrong two-factor or recovery codes: 5 tries a minute per address, then 429 (a 6-digit code has a
# million values; at this pace a guesser needs months for even odds), and 10 failures per 15 minutes
# per account, however many addresses the guesser has (the email change's "link sent" page counts
# too, as each one mails). The re-authentication page (security.verify) asks for the code too when
# the account has two-factor on, so it is limited alike, and so are the password change and account
# deletion, which check the password: a stolen session cookie guesses no faster.
CODE_ATTEMPTS = "5 per minute"
CODE_ATTEMPTS_PER_ACCOUNT = "10 per 15 minutes"


@limiter_callable(default=True)
def _a_failure(response) -> bool:
    # A success is a redirect; a 429 is the per-address limit's refusal, not a try.
    return response.status_code not in (302, 429)


# One budget per account across every page that checks a code or its password (shared scope), so a
# guesser cannot spend 10 on each; pages where no account is at stake (forgot password, resend)
# have the per-address limit only.
_per_account = limiter.shared_limit(
    CODE_ATTEMPTS_PER_ACCOUNT,
    scope="secret-attempts-per-account",
    key_func=_account_at_stake,
    methods=["POST"],
    exempt_when=_no_account_at_stake,
    deduct_when=_a_failure,
)


def _as_slow_for_a_known_address(view):
    """Flask-Security-Too hashes a dummy password when the address has no account, to take as long
    as mailing it the link once took. The mail now leaves from its own pool, so the known address
    was the fast one (the leak reversed): it hashes the same dummy password."""

    @functools.wraps(view)
    def same_time(*args, **kwargs):
        response = view(*args, **kwargs)
        if g.get("account_mail_queued"):
            hash_password("not-a-password")
        return response

    return same_time


def secret_attempts_limited(view):
    @functools.wraps(view)
    def limited(*args, **kwargs):
        return view(*args, **kwargs)

    per_address = limiter.limit(CODE_ATTEMPTS, key_func=_client_ip, methods=["POST"])
    return per_address(_per_account(limited))


@bp.record_once
def _wrap_security_views(state):
    state.app.view_functions["security.login"] = login
    # Also the pages that send mail to an address anyone types (the email change too: a signed-in
    # stranger could otherwise mail any inbox): no mail-bombing, no request threads held on SMTP.
    for endpoint in (
        "security.two_factor_token_validation",
        "security.mf_recovery",
        "security.verify",
        "security.change_password",
        "security.forgot_password",
        "security.send_confirmation",
        "security.change_email",
    ):
        # Flask-Security-Too registers these with two-factor on; a renamed one must not go unlimited.
        state.app.view_functions[endpoint] = secret_attempts_limited(state.app.view_functions[endpoint])
    forgot = state.app.view_functions["security.forgot_password"]
    state.app.view_functions["security.forgot_password"] = _as_slow_for_a_known_address(forgot)
    password_change = state.app.view_functions["security.change_password"]
    state.app.view_functions["security.change_password"] = reauth.keeps_freshness(password_change)


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """Signing out ends this session on the server: a copied cookie stops working at once."""
    if request.method == "POST":
        sessions.revoke_current()
        logout_user()
        flash("You are signed out.")
        return redirect(url_for("security.login"))
    if not current_user.is_authenticated:
        return redirect(url_for("security.login"))
    return render_template("auth/logout.html")


@bp.get("/account")
def account():
    return redirect(url_for("portal.account_settings"))
