"""Flask's signed-cookie sessions and the signed-in user, without their per-request cost when a
request brings no credentials for them (API-key calls, health checks)."""

from flask import Flask, g, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_principal import AnonymousIdentity
from flask_security.core import _identity_loader


class CookieSessionsOnlyWhenSent(SecureCookieSessionInterface):
    """API-key calls send no session cookie; Flask would still build its signing serializer for
    each of them just to find nothing to read, and work out every cookie setting to write none.

    A response for a static file (`asset_endpoints`: the CSS, the scripts, the favicon) never
    writes the cookie. Those requests run the same hooks as a page, and Flask-Login's session
    protection marks a session it has not seen yet as not fresh, a change Flask then saves. A
    page's assets are fetched while the browser moves on (the favicon after the page, often while
    the next page loads), so such a response could arrive after a newer page had set the cookie and
    put the older session back: seen in a browser test as a log-in form refused as expired, its
    CSRF token gone with the session that held it (tests/test_sessions_and_assets.py)."""

    def __init__(self, asset_endpoints=()):
        self.asset_endpoints = frozenset(asset_endpoints)

    def open_session(self, app, request):
        if app.secret_key and (
            "HTTP_COOKIE" not in request.environ or self.get_cookie_name(app) not in request.cookies
        ):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        if request.endpoint in self.asset_endpoints:
            return
        if not session and not session.modified:
            # What Flask's own save_session does with an empty, unmodified session, minus the
            # cookie settings it reads first.
            if session.accessed:
                if "Vary" in response.headers:
                    response.vary.add("Cookie")
                else:
                    response.headers["Vary"] = "Cookie"  # what vary.add would write, without parsing
            return
        super().save_session(app, session, response)


def anonymous_without_credentials(app: Flask) -> None:
    """Mark a request that carries no cookie as anonymous up front.

    Flask-Principal loads the identity before every request, which makes Flask-Login load the
    user: a session lookup, then the request loader. With no Cookie header there is no session and
    no remember-me cookie, and the request loader signs nobody in (Flask-Security-Too's tokens are
    off: levqor_core.accounts.security), so that can only end in the anonymous user, which is set
    directly; the session still counts as read, so responses keep their `Vary: Cookie`.
    Flask-Principal's identity for that user is the anonymous one (its only identity loader,
    Flask-Security's, finds no user), so its hook is skipped too. Registered ahead of
    Flask-Principal's hook."""
    login_manager = app.login_manager

    def _anonymous_without_credentials():
        if "HTTP_COOKIE" in request.environ:
            return
        g._login_user = login_manager.anonymous_user()
        session.accessed = True  # Flask-Login would have read it
        if principal_skippable:
            g.identity = AnonymousIdentity()  # what Flask-Principal's hook sets when no loader finds one

    hooks = app.before_request_funcs.setdefault(None, [])
    principal = app.extensions["security"].principal
    principal_skippable = list(principal.identity_loaders) == [_identity_loader]
    if principal_skippable:
        # In its place, so it still runs after the hooks before it (the revoked-session check).
        at = hooks.index(principal._on_before_request)

        def _principal_unless_anonymous():
            if "identity" not in g:
                principal._on_before_request()

        hooks[at] = _principal_unless_anonymous
    hooks.insert(0, _anonymous_without_credentials)
