"""The portal in headless Chromium against a real server: what a developer does on day one."""

import re

from playwright.sync_api import expect

from .journeys import KEY_RE, sign_up


def test_sign_up_create_key_copy_run_sandbox_usage_updates_and_second_roll_is_limited(context, console, shots, smtp):
    page = console.attach(context.new_page())
    page.goto("/signup")
    shots(page, "signup")
    sign_up(page, smtp)
    expect(page.get_by_role("heading", name="API keys", level=1)).to_be_visible()
    expect(page.locator("#no-key")).to_be_visible()
    # A second tab on the same page, left open: it will not know the key was created.
    stale = console.attach(context.new_page())
    stale.goto("/developer/api-keys")

    # Create the key (POST /developer/api-keys/new): the panel answers with itself, the key shown
    # once with a copy button and a warning; its HX-Trigger refreshes the audit trail.
    page.get_by_role("button", name="Create key").click()
    new_key = page.locator("#new-key")
    expect(new_key).to_be_visible()
    raw = new_key.inner_text().strip()
    assert KEY_RE.match(raw), raw
    expect(page.locator("#key-panel")).to_contain_text("shown only this once")
    expect(page.locator("#copy-new-key")).to_be_focused()
    expect(page.locator("#key-hint")).to_have_text(f"{raw[:8]}…{raw[-4:]}")
    expect(page.locator("#key-events")).to_contain_text("created")
    shots(page, "api-keys-new-key")

    page.get_by_role("button", name="Copy key").click()
    expect(page.locator("#copy-new-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == raw

    # Shown once: no other page (or a reload) ever contains it again.
    other = context.new_page()
    other.goto("/developer/api-keys")
    expect(other.locator("#key-hint")).to_be_visible()
    assert raw not in other.content()
    other.close()

    # Page A stays open on the dashboard; mark it to prove it never reloads.
    page.get_by_role("link", name="I have saved it").click()
    expect(page.locator("#new-key")).to_have_count(0)
    page.evaluate("window.__stayedHere = 'yes'")
    expect(page.locator("#sandbox-today")).to_have_text("0")

    # Page B: run the Python SDK example against the sandbox, as this developer.
    docs = console.attach(context.new_page())
    docs.goto("/docs/sdk")
    docs.get_by_role("button", name="Run Python example").first.click()
    result = docs.locator("#run-submit-job-python .run-result")
    expect(result).to_be_visible()
    expect(result).to_contain_text("202")
    expect(result).to_contain_text("succeeded")
    expect(result.locator(".sandbox-remaining")).to_have_text("99")
    shots(docs, "docs-sdk-run")

    # Page A's usage goes up by itself (htmx polling), without a reload.
    expect(page.locator("#sandbox-today")).to_have_text("1", timeout=20_000)
    assert page.evaluate("window.__stayedHere") == "yes"
    shots(page, "api-keys-usage")

    # The same day, the refreshed panel's button is off and says when a roll is possible again.
    expect(page.locator("#key-create")).to_be_disabled()
    expect(page.locator("#key-create")).to_contain_text("Possible again")
    expect(page.locator("#key-next")).to_contain_text("The next one is possible after")

    # The stale tab still offers "Create key": the refusal says when it is possible again.
    stale.get_by_role("button", name="Create key").click()
    limit = stale.locator("#key-notice")
    expect(limit).to_be_visible()
    expect(limit).to_contain_text("once a day")
    expect(limit).to_contain_text("again at")
    expect(limit).to_contain_text(re.compile(r"\(in \d+ h( \d+ min)?\)"))
    expect(stale.locator("#key-create")).to_be_disabled()
    expect(stale.locator("#key-create")).to_contain_text("Possible again")
    expect(stale.locator("#key-hint")).to_have_text(f"{raw[:8]}…{raw[-4:]}")  # the panel now knows the key
    expect(stale.locator("#key-events")).to_contain_text("created")  # and so does the audit trail
    expect(page.locator("#key-hint")).to_have_text(f"{raw[:8]}…{raw[-4:]}")  # still the same key
    assert page.evaluate("window.__stayedHere") == "yes"
    shots(stale, "api-keys-limit")

    assert not [e for e in console.errors if "Content Security Policy" in e or "Refused" in e], console.errors


def test_the_reference_tries_an_operation_in_the_sandbox_with_the_pasted_key(context, console, shots, smtp):
    page = console.attach(context.new_page())
    sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    raw = page.locator("#new-key").inner_text().strip()

    page.goto("/docs/api")
    expect(page.locator("#op-list_workflows")).to_be_visible()
    page.get_by_label("Your API key").fill(raw)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#try-key-status")).to_contain_text("Using key")
    shots(page, "docs-api")

    sent = []
    page.on("request", lambda req: "/api/" in req.url and sent.append((req.url, req.headers.get("x-api-key"))))
    operation = page.locator("#op-list_workflows")
    operation.get_by_text("Try it", exact=True).click()
    operation.get_by_role("button", name="Send to the sandbox").click()
    expect(operation.locator(".try-output .status")).to_have_text("200")
    assert any(url.endswith("/api/sandbox/v1/workflows") and key == raw for url, key in sent), sent
    assert not any("/api/v1/" in url for url, _ in sent), sent

    page.goto("/developer/api-keys")
    expect(page.locator("#sandbox-today")).to_have_text("1")
    assert not [e for e in console.errors if "Content Security Policy" in e or "Refused" in e], console.errors


def test_main_pages_render_for_a_visitor_on_desktop_and_phone(context, console, shots, browser, live_server):
    page = console.attach(context.new_page())
    for path, name in (("/developer", "developer"), ("/pricing", "pricing"), ("/login", "login")):
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        shots(page, name)
    page.goto("/login")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("do not match")
    expect(page.get_by_label("Email")).to_have_attribute("aria-invalid", "true")
    shots(page, "login-error")

    # Keyboard: the skip link is the first stop and moves focus to the content.
    page.goto("/developer")
    page.keyboard.press("Tab")
    expect(page.locator(".skip-link")).to_be_focused()

    phone = browser.new_context(base_url=live_server, viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        small = console.attach(phone.new_page())
        for path, name in (
            ("/developer", "developer-phone"),
            ("/pricing", "pricing-phone"),
            ("/docs/sdk", "docs-sdk-phone"),
            ("/docs/api", "docs-api-phone"),
        ):
            small.goto(path)
            # Nothing wider than the screen: no sideways scrolling on a phone.
            assert small.evaluate("document.documentElement.scrollWidth") <= 390 + 1, path
            shots(small, name)
    finally:
        phone.close()
    unexpected = [e for e in console.errors if "status of 401" not in e]  # the wrong password, on purpose
    assert not unexpected, unexpected


def test_roll_with_a_grace_period_then_revoke_update_the_panel_and_audit_trail_in_place(
    context, console, shots, app, smtp
):
    page = console.attach(context.new_page())
    sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    first = page.locator("#new-key").inner_text().strip()
    page.get_by_role("link", name="I have saved it").click()
    expect(page.locator("#new-key")).to_have_count(0)

    # A day later, as far as the daily key-creation limit knows (the server shares this Redis).
    r = app.extensions["levqor.redis"]
    r.delete(*r.keys(f"LIMITS:LIMITER/{app.config['RATELIMIT_KEY_PREFIX']}/key-new:*"))
    page.reload()
    page.evaluate("window.__stayedHere = 'yes'")
    page.get_by_label("When you roll, the old key…").select_option("3600")

    # Roll asks first too, in the same dialog: what follows for the grace period chosen, and when
    # the next key is possible; Cancel keeps the key.
    page.locator("#key-create").click()
    when = r"\d\d \w{3}, \d\d:\d\d UTC"
    asked = page.get_by_role(
        "dialog",
        name=re.compile(
            rf"^Roll key {re.escape(first[:8] + '…' + first[-4:])}\? A new key is issued and shown once, here\."
            rf" Your current key keeps working for 1 h, .* You can create a new key after {when} \(one a day\)\.$"
        ),
    )
    expect(asked).to_be_visible()
    expect(asked.get_by_role("button", name="Cancel")).to_be_focused()
    asked.get_by_role("button", name="Cancel").click()
    expect(asked).to_be_hidden()
    expect(page.locator("#key-create")).to_be_focused()
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator("#key-hint")).to_have_text(f"{first[:8]}…{first[-4:]}")  # the same key
    expect(page.locator("#key-events")).not_to_contain_text("rolled")

    page.locator("#key-create").click()
    expect(asked).to_be_visible()
    asked.get_by_role("button", name="Roll key").click()  # the confirm button says what it does
    second = page.locator("#new-key")
    expect(second).to_be_visible()
    assert KEY_RE.match(second.inner_text().strip()) and second.inner_text().strip() != first
    expect(page.locator("#key-panel")).to_contain_text(f"Previous key {first[:8]}…{first[-4:]} keeps working until")
    expect(page.locator("#key-events")).to_contain_text("rolled")

    # Revoke asks first, in the page's own modal dialog; Cancel does nothing.
    page.get_by_role("button", name="Revoke").click()
    dialog = page.get_by_role("dialog", name=re.compile(r"^Revoke key lvq_.*\? It stops working at once"))
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#key-hint")).to_be_visible()  # dismissed: nothing happened
    expect(page.locator("#key-events")).not_to_contain_text("revoked")

    page.get_by_role("button", name="Revoke").click()
    expect(dialog).to_be_visible()
    # The cancelled ask's "close" event is a queued task: on a slow machine it arrives after this
    # ask opened. It must not settle this ask (it once did: this Revoke then did nothing).
    page.locator("#confirm-dialog").dispatch_event("close")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Revoke").click()
    expect(page.locator("#key-notice")).to_contain_text("is revoked")
    expect(page.locator("#no-key")).to_be_visible()
    expect(page.locator("#key-events")).to_contain_text("revoked")
    assert page.evaluate("window.__stayedHere") == "yes"

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    shots(page, "api-keys-phone")
    assert not [e for e in console.errors if "Content Security Policy" in e or "Refused" in e], console.errors
