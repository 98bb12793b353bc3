"""Back after a page that showed a secret in answer to a POST: Chromium must not show it again.

Flask-Security-Too's pages sent `Cache-Control: private=True, no-store=True` (its default as
Werkzeug 3.1 writes it), which Chromium does not read as no-store: it kept the POST's answer in its
HTTP cache, and Back showed the recovery codes again (issue 25, item 1;
docs/security/hardening-round-2.md). With no-store, Back to a POST's answer is Chromium's "Confirm
Form Resubmission" page (net::ERR_CACHE_MISS)."""

import contextlib

from playwright.sync_api import Error as PlaywrightError

from .journeys import sign_up

# Chromium's cache write of a POST's answer races the next navigation: with the old header one
# round showed the codes again in about 4 runs of 5 here, so a few rounds make a miss unlikely.
ROUNDS = 3


def test_back_after_new_recovery_codes_does_not_show_them_again(context, smtp):
    page = context.new_page()
    sign_up(page, smtp)
    for _ in range(ROUNDS):
        page.goto("/developer/account/recovery-codes")
        page.get_by_role("button", name="Make new recovery codes").click()  # a POST: its answer shows them
        codes = page.locator("#recovery-codes code").all_inner_texts()
        assert codes
        html = elsewhere_then_back(page)
        assert not any(code in html for code in codes)


def elsewhere_then_back(page) -> str:
    """To another page, then Back, as the browser's button; what the tab shows once it has settled."""
    page.wait_for_load_state("networkidle")
    page.goto("/developer")
    page.wait_for_load_state("networkidle")
    with contextlib.suppress(PlaywrightError):  # net::ERR_CACHE_MISS: what no-store gives a POST's answer
        page.go_back(wait_until="load")
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)  # not a timing assertion: lets a page taken from the cache paint
    return page.evaluate("document.documentElement.outerHTML")
