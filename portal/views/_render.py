"""One view, two shapes: the whole page for a browser, one fragment for htmx (htmx-flask's
`request.htmx`); and the log-in guards that know an htmx request cannot follow a redirect."""

import functools
from collections.abc import Callable
from urllib.parse import urlsplit

import htmx_flask
from flask import redirect, render_template, request, url_for
from flask_login import current_user

from levqor_core.accounts import reauth

# A fragment: its template, and a function building only what that template shows.
Fragment = tuple[str, Callable[[], dict]]


def page_or_fragment(page: str, fragments: dict[str, Fragment], **context) -> str:
    """The fragment htmx targets (HX-Target is its root id), built from its own context only;
    for anyone else, or a target the view does not know, the whole page with every fragment's."""
    target = request.htmx.target if request.htmx else None
    if target in fragments:
        template, build = fragments[target]
        return render_template(template, **build(), **context)
    for _, build in fragments.values():
        context |= build()
    return render_template(page, **context)


def login_required(view):
    """Flask-Login's login_required, except that htmx is told to navigate to the log-in page
    (HX-Redirect) instead of swapping the log-in page into a fragment."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user.is_authenticated:
            return view(*args, **kwargs)
        if request.htmx:
            # HX-Current-URL is the page the fragment lives on: come back to it after logging in.
            login = url_for("security.login", next=_path_of(request.htmx.current_url or "") or None)
            return htmx_flask.make_response("", 401, redirect=login)
        return redirect(url_for("security.login", next=request.full_path))

    return wrapped


def fresh_log_in_required(back_to: str):
    """For a sensitive action: a session that has not authenticated in full within
    SECURITY_FRESHNESS is sent to the re-authentication page (password, and the second factor when
    the account has one: levqor_core.accounts.reauth), which returns to the endpoint `back_to` (a
    page that shows what the action will do, since the browser comes back with a GET)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if reauth.fresh_log_in():
                return view(*args, **kwargs)
            verify = url_for("security.verify", next=url_for(back_to))
            if request.htmx:
                return htmx_flask.make_response("", 200, redirect=verify)
            return redirect(verify)

        return wrapped

    return decorate


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
