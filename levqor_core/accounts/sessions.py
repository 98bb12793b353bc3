"""Portal sessions that end on the server.

Sessions are signed cookies, so a copy of one works as long as the original. Two ways to end them:
- one session (log out): each log-in gets a random id in the session; logging out records it in
  Redis as revoked for as long as a cookie stays valid (PERMANENT_SESSION_LIFETIME), and a request
  carrying a revoked id is treated as signed out;
- every session of an account (sign out everywhere, password change or reset): a new
  `fs_uniquifier` (service.end_all_sessions), which no cookie issued before names.

There is no "remember me": its cookie (Flask-Login's remember_token) names the account and
nothing that logging out ends, so a copy of it signed in again after log-out. The log-in form has
no such field (security.PortalLoginForm) and a remember cookie that arrives anyway (posted by
hand, or issued before) is ignored and deleted (_no_remember_cookie).

While Redis is down the revocation list cannot be read and a logged-out copy keeps working until it
answers again (the rest of the portal keeps working too); "sign out everywhere" needs no Redis."""

import logging
import secrets

import redis
from flask import Flask, current_app, g, request, session
from flask_login import user_logged_in
from flask_login.config import COOKIE_NAME
from flask_security.signals import user_authenticated

log = logging.getLogger(__name__)

KEY = "lvq:session-revoked:{}"
SESSION_ID = "lvq_sid"


def _redis():
    return current_app.extensions["levqor.redis"]


def _started(app, user, **extra) -> None:
    session[SESSION_ID] = secrets.token_urlsafe(16)


def _new_csrf_token(app, user, authn_via: list[str] | None = None, **extra) -> None:
    """A new CSRF token at each log-in: one read before it (a shared computer, a page cached or
    left open, a token planted by another site's page) is not valid for the account's forms after
    it. Not when a password change signs the browser in again: its other tabs keep working.
    Flask-WTF keeps the raw token in the session and this request's signed one in `g`."""
    if authn_via == ["change"]:
        return
    field = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    session.pop(field, None)
    g.pop(field, None)


def revoke_current() -> None:
    """End this browser's session only (a copied cookie with it)."""
    # This browser's cookie stops carrying the id, so its next request is not treated as a revoked
    # session and cleared: the page after log-out or deletion keeps its flashed message.
    sid = session.pop(SESSION_ID, None)
    if not sid:
        return
    lifetime = int(current_app.permanent_session_lifetime.total_seconds())
    try:
        _redis().set(KEY.format(sid), 1, ex=lifetime)
    except redis.RedisError as err:
        log.warning("session %s… not recorded as ended (Redis: %s)", sid[:6], err)


def _refuse_revoked() -> None:
    sid = session.get(SESSION_ID) if session else None
    if not sid:
        return
    try:
        revoked = _redis().exists(KEY.format(sid))
    except redis.RedisError:
        return  # see the module docstring
    if revoked:
        session.clear()


def _no_remember_cookie() -> None:
    # Flask-Login's own way to drop a remember cookie (what logout_user sets): it then neither signs
    # in from it nor keeps it (the response deletes it).
    if current_app.config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME) in request.cookies:
        session["_remember"] = "clear"


def init_app(app: Flask) -> None:
    user_logged_in.connect(_started, app)
    user_authenticated.connect(_new_csrf_token, app)
    app.before_request(_refuse_revoked)
    app.before_request(_no_remember_cookie)
