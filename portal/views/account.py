"""/developer/account: the signed-in developer's email, password, sign-ins and sessions.

Changing the password and the email are Flask-Security-Too's views (in the portal's templates);
this page links to them and ends sessions."""

from flask import flash, redirect, render_template, url_for
from flask_login import current_user
from flask_security import logout_user

from levqor_core.accounts import service as accounts

from . import bp
from ._render import login_required


@bp.get("/developer/account")
@login_required
def account_settings():
    return render_template("account/settings.html", account=current_user)


@bp.post("/developer/account/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    """Ends every session of the account, this one included: every browser signs in again."""
    accounts.end_all_sessions(current_user)
    logout_user()
    flash("You are signed out everywhere. Log in again to continue.")
    return redirect(url_for("security.login"))
