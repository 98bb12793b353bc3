"""Flask's signed-cookie sessions, without the per-request cost when no session cookie was sent."""

from flask.sessions import SecureCookieSessionInterface


class CookieSessionsOnlyWhenSent(SecureCookieSessionInterface):
    """API-key calls send no session cookie; Flask would still build its signing serializer for
    each of them just to find nothing to read."""

    def open_session(self, app, request):
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)
