"""The portal's 405 page (new with issue 25, item 5): readable, accessible, at a desktop's and a
phone's width, and its `Allow` header names what the address takes."""

import pytest
from playwright.sync_api import expect

from .axe import assert_accessible


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (390, 844)])
def test_a_get_on_a_post_only_address_is_a_readable_405_page(browser, live_server, shots, width, height):
    context = browser.new_context(base_url=live_server, viewport={"width": width, "height": height}, bypass_csp=True)
    try:
        page = context.new_page()
        answer = page.goto("/developer/api-keys/new")
        assert answer.status == 405 and answer.headers["allow"] == "OPTIONS, POST"
        expect(page.get_by_role("heading", name="Not allowed here", level=1)).to_be_visible()
        expect(page.get_by_role("link", name="Back to the developer home")).to_be_visible()
        assert_accessible(page, "the 405 page")
        shots(page, f"method-not-allowed-{width}")
    finally:
        context.close()
