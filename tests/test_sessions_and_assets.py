"""A page's static files never write the session cookie: fetched while the browser moves on (the
favicon after its page, often while the next page loads), such a response could otherwise arrive
after a newer page's and put an older session back (levqor_core.web.sessions)."""

import re

from .conftest import csrf_from

ASSETS = ("/assets/portal.css", "/assets/portal.js", "/assets/favicon.svg", "/vendor/htmx.min.js")
# What the confirmation link's redirect leaves in the browser: its message, no CSRF token (signing
# out pops it), nothing Flask-Login's session protection has marked yet.
CONFIRMED = {"_flashes": [["success", "Thank you. Your email has been confirmed."]], "fs_cc": "clear"}


def _session_set(response) -> str | None:
    found = re.search(r"(?:^|,\s*)session=([^;]+)", response.headers.get("set-cookie", ""))
    return found.group(1) if found else None


def _send(client, method: str, path: str, cookie: str, **kwargs):
    """One request carrying exactly this session cookie (the test client's own jar left out)."""
    client.cookies.clear()
    return client.request(method, path, headers={"Cookie": f"session={cookie}"}, **kwargs)


def test_an_asset_answers_without_writing_the_session_a_page_still_does(cx, app):
    older = app.session_interface.get_signing_serializer(app).dumps(CONFIRMED)
    with cx.test_client() as client:
        for path in ASSETS:
            answer = _send(client, "GET", path, older)
            assert answer.status_code == 200 and "set-cookie" not in answer.headers, path
        # The same hooks on a page change the session (the message shown, a CSRF token): saved.
        assert _session_set(_send(client, "GET", "/login", older))


def test_a_late_asset_answer_cannot_take_the_log_in_forms_token_away(cx, app):
    older = app.session_interface.get_signing_serializer(app).dumps(CONFIRMED)
    with cx.test_client() as client:
        # The log-in page: its answer sets the newer cookie, holding the token its form carries.
        page = _send(client, "GET", "/login?next=/developer/api-keys", older)
        newer, token = _session_set(page), csrf_from(page.text)
        assert newer and token
        # The previous page's favicon, asked with the older cookie, answers after it: the browser
        # keeps the last cookie it was given.
        late = _send(client, "GET", "/assets/favicon.svg", older)
        kept = _session_set(late) or newer
        answer = _send(
            client,
            "POST",
            "/login?next=/developer/api-keys",
            kept,
            data={"email": "nobody@example.com", "password": "not the password", "csrf_token": token},
        )
        assert answer.status_code != 400 and "This form has expired" not in answer.text
        assert "Invalid" in answer.text or "invalid" in answer.text  # the credentials were checked
