"""One view, two shapes: the whole page for a browser, one fragment for htmx."""

from flask import render_template, request


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def page_or_fragment(page: str, fragments: dict[str, str], **context) -> str:
    """Render `page`, or the fragment whose root id htmx sent as HX-Target."""
    if is_htmx():
        template = fragments.get(request.headers.get("HX-Target", ""))
        if template:
            return render_template(template, **context)
    return render_template(page, **context)


def login_required(view):
    """Flask-Login's login_required, except that htmx is told to navigate to the log-in page
    (HX-Redirect) instead of swapping the log-in page into a fragment."""
    import functools

    from flask import make_response, redirect, url_for
    from flask_login import current_user

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if current_user.is_authenticated:
            return view(*args, **kwargs)
        # HX-Current-URL is the page the fragment lives on: come back to it after logging in.
        back = request.full_path if not is_htmx() else _path_of(request.headers.get("HX-Current-URL", ""))
        login = url_for("security.login", next=back or None)
        if is_htmx():
            response = make_response("", 401)
            response.headers["HX-Redirect"] = login
            return response
        return redirect(login)

    return wrapped


def _path_of(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
