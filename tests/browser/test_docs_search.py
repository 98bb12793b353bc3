"""The docs search in Chromium: `/` reaches the box, Enter opens the results, typing updates them
(and the address) without a reload, and a result opens its section."""

import re

from playwright.sync_api import expect


def test_the_docs_search_is_reached_by_slash_and_answers_as_the_reader_types(context, console):
    page = console.attach(context.new_page())
    page.goto("/docs/guides/errors")
    page.keyboard.press("/")
    expect(page.locator("#side-q")).to_be_focused()
    page.keyboard.type("retry backoff")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/docs/search\?q=retry\+backoff$"))
    expect(page.locator(".search-hit-title").first).to_have_attribute("href", "/docs/guides/errors#backoff")
    expect(page.locator("#search-status")).to_have_text("2 results for “retry backoff”")

    # On the results page the box answers as it is typed in: the list, the status line (the same
    # live region) and the address change; the page does not reload.
    page.evaluate("window.notReloaded = true")
    page.keyboard.press("/")
    box = page.locator("#search-q")
    expect(box).to_be_focused()
    box.fill("webh")
    expect(page.locator("#search-status")).to_contain_text("for “webh”")
    expect(page).to_have_url(re.compile(r"/docs/search\?q=webh$"))
    expect(page.locator(".search-hit-title").first).to_have_attribute("href", "/docs/guides/webhooks")
    expect(page.locator(".search-snippet mark").first).to_be_visible()
    assert page.evaluate("window.notReloaded") is True
    box.fill("webhooks zebra")
    expect(page.locator("#search-status")).to_have_text("No results for “webhooks zebra”.")
    expect(page.locator(".search-hit")).to_have_count(0)

    # A result opens its section: an operation's article in the reference.
    box.fill("create_job")
    first = page.locator(".search-hit-title").first
    expect(first).to_have_attribute("href", "/docs/api#op-create_job")
    first.click()
    expect(page).to_have_url(re.compile(r"/docs/api#op-create_job$"))
    expect(page.locator("#op-create_job")).to_be_in_viewport()
    # What was typed replaced the results page's address: Back returns to it as last typed, then
    # to the guide, not through each word on the way.
    page.go_back()
    expect(page).to_have_url(re.compile(r"/docs/search\?q=create_job$"))
    page.go_back()
    expect(page).to_have_url(re.compile(r"/docs/guides/errors$"))
    assert console.errors == []
