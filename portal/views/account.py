"""/developer/account: the signed-in developer's email, password, sign-ins and sessions.

Changing the password and the email are Flask-Security-Too's views (in the portal's templates);
this page links to them and ends sessions."""

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_security import logout_user

from levqor_core.accounts import deletion, reauth, sessions, sign_ins
from levqor_core.accounts import service as accounts
from levqor_core.billing.problems import PaymentProviderError
from levqor_core.keys.service import Actor

from . import bp
from ._render import login_required
from .auth import secret_attempts_limited


@bp.get("/developer/account")
@login_required
def account_settings(delete_error: str | None = None):
    return render_template(
        "account/settings.html",
        account=current_user,
        sign_ins=sign_ins.recent(current_user.id),
        delete_error=delete_error,
        code_label=reauth.CODE_LABEL,
    )


@bp.post("/developer/account/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    """Ends every session of the account, this one included: every browser signs in again."""
    accounts.end_all_sessions(current_user)
    logout_user()
    flash("You are signed out everywhere. Log in again to continue.")
    return redirect(url_for("security.login"))


@bp.post("/developer/account/delete")
@login_required
@secret_attempts_limited
def delete_account():
    """Deletes the account once its password is given again, and a code when it has two-factor on: the
    same check as the re-authentication page, so a stolen session plus a phished password cannot
    delete it either (README "Accounts": what goes, what stays)."""
    proof = reauth.VerifyWithSecondFactorForm(request.form, user=current_user._get_current_object())
    if not proof.validate():
        if proof.password.errors:
            return account_settings(delete_error="That password is not this account's: nothing was deleted."), 400
        return account_settings(delete_error=" ".join(proof.code.errors) + " Nothing was deleted."), 400
    actor = Actor(email=current_user.email, ip=request.remote_addr, user_agent=request.headers.get("User-Agent"))
    try:
        deletion.delete(current_user._get_current_object(), actor)
    except PaymentProviderError:
        error = (
            "Stripe did not answer, so your subscription could not be canceled: nothing was deleted. Try again later."
        )
        return account_settings(delete_error=error), 502
    sessions.revoke_current()
    logout_user()
    flash("Your account is deleted: its keys stopped working, its subscription is canceled and its data is gone.")
    return redirect(url_for("portal.signup"))
