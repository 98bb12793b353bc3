"""Recent sign-ins: each successful sign-in is recorded (when, from where, with what), and only the
newest KEEP of an account are kept, so the table stays small however often someone signs in.

Flask-Security-Too's trackable columns only hold the last two; this is the list the account page
shows, so a developer can spot a sign-in that was not theirs."""

import sqlalchemy as sa
from flask import Flask, request
from flask_security.signals import user_authenticated

from levqor_core.accounts.models import Account, SignIn
from levqor_core.extensions import db

KEEP = 20

# Flask-Security-Too's `authn_via` names, as the page says them.
METHODS = {
    "password": "password",
    "reset": "password reset link",
    "change": "password change",
    "confirm": "email confirmation link",
    "register": "sign-up",
}


def _method(authn_via: list[str] | None) -> str:
    if authn_via:
        return " + ".join(METHODS.get(via, via) for via in authn_via)
    # Flask-Security-Too completes a two-factor sign-in without naming the factor: the view says it.
    if request.endpoint == "security.mf_recovery":
        return "password + recovery code"
    return "password + authenticator app"


def _record(app, user: Account, authn_via: list[str] | None = None, **_extra) -> None:
    db.session.add(
        SignIn(
            account_id=user.id,
            ip=request.remote_addr,
            user_agent=(request.headers.get("User-Agent") or "")[:255] or None,
            method=_method(authn_via),
        )
    )
    db.session.flush()
    newest = sa.select(SignIn.id).where(SignIn.account_id == user.id).order_by(SignIn.id.desc()).limit(KEEP)
    db.session.execute(
        sa.delete(SignIn).where(SignIn.account_id == user.id, SignIn.id.not_in(newest.scalar_subquery()))
    )
    db.session.commit()


def recent(account_id: int, limit: int = 10) -> list[SignIn]:
    return list(
        db.session.scalars(
            sa.select(SignIn).where(SignIn.account_id == account_id).order_by(SignIn.id.desc()).limit(limit)
        )
    )


def init_app(app: Flask) -> None:
    user_authenticated.connect(_record, app)
