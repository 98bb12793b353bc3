"""A key GitHub's secret scanning reports, as its owner meets it in the browser: the panel says it
was found in public and revoked, links to "Replace now", and the replacement is issued at once."""

import json

import httpx
import pytest
from playwright.sync_api import expect

from levqor_core.keys import leaks
from levqor_core.keys.github_signature import GitHubKeys

from ..fakes.github_keys_server import GitHubKeysServer
from .axe import assert_accessible
from .journeys import KEY_RE, sign_up

FOUND_AT = "https://github.com/octo-org/octo-repo/blob/2f1e0d3c/settings.py"


@pytest.fixture
def github(app, monkeypatch):
    server = GitHubKeysServer().start()
    monkeypatch.setitem(app.extensions, "levqor.github_keys", GitHubKeys(server.url))
    yield server
    server.close()


def test_a_reported_key_is_shown_revoked_with_where_it_was_found_and_replaced_at_once(
    context, console, shots, smtp, github, live_server
):
    page = console.attach(context.new_page())
    sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    leaked = page.locator("#new-key").inner_text().strip()
    assert KEY_RE.match(leaked)

    body = json.dumps([{"token": leaked, "type": "levqor_api_key", "url": FOUND_AT, "source": "content"}]).encode()
    answer = httpx.post(f"{live_server}/api/secret-scanning/github", content=body, headers=github.current.headers(body))
    assert answer.status_code == 200 and answer.json()[0]["label"] == "true_positive"
    leaks.wait_until_notified()

    page.goto("/developer/api-keys")
    notice = page.locator("#key-leaked")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text(f"{leaked[:8]}…{leaked[-4:]}")
    expect(notice.get_by_role("link", name=FOUND_AT)).to_have_attribute("href", FOUND_AT)
    expect(page.locator("#key-events")).to_contain_text("found in public")
    assert_accessible(page, "API keys, a key found in public")
    shots(page, "api-keys-leaked")
    page.set_viewport_size({"width": 390, "height": 844})
    shots(page, "api-keys-leaked-phone")
    page.set_viewport_size({"width": 1440, "height": 900})

    page.get_by_role("link", name="Replace it now").click()  # the log-in is fresh: straight to the page
    expect(page.get_by_role("heading", name="Replace a leaked key now")).to_be_visible()
    page.get_by_role("button", name="Issue a new key now").click()
    new = page.locator("#new-key")
    expect(new).to_be_visible()
    assert KEY_RE.match(new.inner_text().strip()) and new.inner_text().strip() != leaked
    expect(page.locator("#key-leaked")).to_have_count(0)
    assert console.errors == []
