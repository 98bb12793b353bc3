"""Sign-up, log-in and log-out."""

import time
from urllib.parse import urlsplit

from flask import flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_user, logout_user

from levqor_core.accounts import service as accounts
from levqor_core.web.limiter import limiter, limiter_callable

from ..helpers.forms import CredentialsForm
from . import bp


@limiter_callable(default="unknown")
def _client_ip() -> str:
    return request.remote_addr or "unknown"


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


def _form_again(template: str):
    """A refused log-in or sign-up shows the wait in the form itself, like any other form error."""

    @limiter_callable(default=None)  # None: the app's plain 429 page
    def on_breach(limit):
        seconds = max(1, int(limit.reset_at - time.time() + 0.999))
        wait = f"{-(-seconds // 60)} minute(s)" if seconds >= 60 else f"{seconds} second(s)"
        error = f"Too many attempts from your network. Try again in {wait}."
        return make_response(render_template(template, form=CredentialsForm(), error=error), 429)

    return on_breach


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit("20 per hour", key_func=_client_ip, methods=["POST"], on_breach=_form_again("auth/signup.html"))
def signup():
    form = CredentialsForm()
    error = None
    if form.validate_on_submit():
        try:
            account = accounts.sign_up(form.email.data, form.password.data)
        except accounts.AccountError as err:
            error = str(err)
        else:
            login_user(account)
            flash("Welcome to Levqor. Create your first API key to start calling the API.")
            return redirect(_safe_next(request.args.get("next") or url_for("portal.api_keys")))
    elif request.method == "POST":
        error = "Enter a valid email address and a password."
    return render_template("auth/signup.html", form=form, error=error), 400 if error else 200


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("10 per minute", key_func=_client_ip, methods=["POST"], on_breach=_form_again("auth/login.html"))
def login():
    form = CredentialsForm()
    error = None
    if form.validate_on_submit():
        account = accounts.authenticate(form.email.data, form.password.data)
        if account:
            login_user(account)
            return redirect(_safe_next(request.args.get("next")))
        error = "That email and password do not match an account."
    elif request.method == "POST":
        error = "Enter your email address and password."
    return render_template("auth/login.html", form=form, error=error), 401 if error else 200


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    if request.method == "POST":
        logout_user()
        flash("You are signed out.")
        return redirect(url_for("portal.login"))
    if not current_user.is_authenticated:
        return redirect(url_for("portal.login"))
    return render_template("auth/logout.html")


@bp.get("/account")
def account():
    return redirect(url_for("portal.api_keys"))
