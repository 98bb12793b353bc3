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
    return email
