"""Back after a page that showed a secret in answer to a POST: Chromium must not show it again.

Flask-Security-Too's pages sent `Cache-Control: private=True, no-store=True` (its default as
Werkzeug 3.1 writes it), which Chromium does not read as no-store: Back showed the authenticator's
recovery codes again from its cache (issue 25, item 1; docs/security/hardening-round-2.md). With
no-store, Back to a POST's answer is Chromium's "Confirm Form Resubmission" page (ERR_CACHE_MISS)."""

import contextlib
import re

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from .journeys import sign_up


def test_back_after_the_two_factor_setup_does_not_show_its_secret_again(context, smtp):
    page = context.new_page()
    sign_up(page, smtp)
    page.goto("/developer/account/two-factor")
    page.get_by_role("button", name="Continue").click()  # a POST: its answer shows the secret
    secret = page.locator("#totp-key").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4})+", secret), secret

    page.goto("/developer")  # elsewhere, then Back
    expect(page).to_have_url(re.compile(r"/developer"))
    html = back(page)
    assert secret not in html and secret.replace("-", "") not in html


def test_back_after_new_recovery_codes_does_not_show_them_again(context, smtp):
    page = context.new_page()
    sign_up(page, smtp)
    page.goto("/developer/account/recovery-codes")
    page.get_by_role("button", name="Make new recovery codes").click()  # a POST: its answer shows them
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert codes

    page.goto("/developer")
    html = back(page)
    assert not any(code in html for code in codes)


def back(page) -> str:
    """Back, as the browser's button; what the tab shows once it has settled."""
    with contextlib.suppress(PlaywrightError):  # net::ERR_CACHE_MISS: what no-store gives a POST's answer
        page.go_back(wait_until="load")
    page.wait_for_load_state("load")
    page.wait_for_timeout(500)  # not a timing assertion: lets a page restored from cache paint
    return page.evaluate("document.documentElement.outerHTML")
