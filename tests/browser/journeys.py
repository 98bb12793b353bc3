"""Steps the browser tests share: signing up through the real forms and the mailed link."""

import re
import uuid
from urllib.parse import urlsplit

from playwright.sync_api import expect

from ..conftest import PASSWORD

KEY_RE = re.compile(r"^lvq_[0-9a-f]{32}_[0-9A-Za-z]{6}$")


def sign_up(page, smtp, email=None):
    """Sign up, open the confirmation link from the mail received, log in: on /developer/api-keys."""
    email = email or f"dev-{uuid.uuid4().hex[:10]}@example.com"
    exchanges = _Exchanges(page)
    try:
        page.goto("/signup")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign up").click()
        expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
        text = smtp.to(email)[-1].get_body(("plain",)).get_content()
        page.goto(urlsplit(re.search(r"https?://\S+/confirm/\S+", text).group(0)).path)
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/developer/api-keys$"))
    except AssertionError as failed:
        # What the browser sent and was given, cookie by cookie: a log-in refused as expired in a
        # CI run was an older session put back by a late asset answer (tests/test_sessions_and_assets.py).
        raise AssertionError(f"{failed}\n\nwhat the browser sent and got:\n{exchanges.report()}") from None
    finally:
        exchanges.stop()
    return email


class _Exchanges:
    """The page's requests as sent (the session cookie's signature, the last 8 characters) and the
    session cookies its responses set: to tell which answer's cookie a request carried. Only kept
    while the journey runs; their headers are read only for a report."""

    def __init__(self, page):
        self.page, self.seen = page, []
        page.on("request", self._note)
        page.on("response", self._note)

    def _note(self, request_or_response) -> None:
        self.seen.append(request_or_response)

    @staticmethod
    def _session(header: str) -> str:
        found = re.search(r"(?:^|;\s*)session=([^;]+)", header or "")
        return f"…{found.group(1)[-8:]}" if found else "-"

    def report(self) -> str:
        lines = []
        for item in self.seen:
            if "/assets/" in item.url or "/vendor/" in item.url:
                continue
            if hasattr(item, "status"):
                lines.append(f"< {item.status} {item.url} set {self._session(item.all_headers().get('set-cookie'))}")
            else:
                lines.append(f"> {item.method} {item.url} cookie {self._session(item.all_headers().get('cookie'))}")
        cookies = [f"{c['name']}=…{c['value'][-8:]}" for c in self.page.context.cookies()]
        return "\n".join([*lines, f"cookies now: {cookies}"])

    def stop(self):
        self.page.remove_listener("request", self._note)
        self.page.remove_listener("response", self._note)
