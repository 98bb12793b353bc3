"""The app shell on every signed-in page, in Chromium at a desktop's 1440×900 and a phone's 390×844:
nothing wider than the viewport, the top bar one row on the desktop, and on the phone the
navigation (Account included) reachable through the Menu button and the account menu.

With PORTAL_SHOTS set to a folder, each page is also saved there as a PNG at both sizes, to be
looked at (the screenshots are not kept in the repository)."""

import os
import re
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from playwright.sync_api import expect

from levqor_core.extensions import db
from levqor_core.requestlog.models import RequestLogEntry

from .axe import assert_accessible
from .journeys import sign_up

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = os.environ.get("PORTAL_SHOTS")

# Every page a signed-in developer has, by a name for its screenshot. "{request_id}" is a failed call's.
SIGNED_IN_PAGES = {
    "overview": "/developer",
    "api-keys": "/developer/api-keys",
    "usage": "/developer/usage",
    "logs": "/developer/logs",
    "log-entry": "/developer/logs/{request_id}",
    "webhooks": "/developer/webhooks",
    "billing": "/developer/billing",
    "account": "/developer/account",
    "account-password": "/developer/account/password",
    "account-email": "/developer/account/email",
    "two-factor": "/developer/account/two-factor",
    "docs": "/docs",
    "docs-getting-started": "/docs/getting-started",
    "docs-guide-webhooks": "/docs/guides/webhooks",
    "docs-reference": "/docs/api",
    "docs-sdk": "/docs/sdk",
    "docs-changelog": "/docs/changelog",
    "docs-search": "/docs/search?q=webhooks",
    "pricing": "/pricing",
    "status": "/status",
}


def overflow(page) -> int:
    """How many CSS pixels the page is wider than its viewport (0 when it fits)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def shoot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _failed_call(app, live_server, key: str) -> str:
    with httpx.Client(base_url=live_server, headers={"x-api-key": key}) as api:
        failed = api.post("/api/sandbox/v1/jobs", json={"workflow": "no-such-workflow", "input": {}})
        api.get("/api/sandbox/v1/workflows")
    assert failed.status_code >= 400
    request_id = failed.headers["Request-Id"]
    deadline = time.monotonic() + 10
    with app.app_context():
        while not db.session.scalar(sa.select(RequestLogEntry.id).where(RequestLogEntry.request_id == request_id)):
            assert time.monotonic() < deadline, f"{request_id} never reached the request log"
            app.extensions["levqor.request_log"].flush()
            db.session.rollback()
            time.sleep(0.05)
    return request_id


def test_every_signed_in_page_fits_a_phone_and_a_desktop_with_the_navigation_reachable(
    context, console, app, live_server, smtp
):
    page = console.attach(context.new_page())
    sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    request_id = _failed_call(app, live_server, key)
    problems = []
    for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        for name, path in SIGNED_IN_PAGES.items():
            page.goto(path.format(request_id=request_id))
            page.wait_for_load_state("load")
            wider = overflow(page)
            if wider > 0:
                problems.append(f"{name} at {size_name}: {wider}px wider than the viewport")
            bar = page.locator(".topbar").bounding_box()
            if size_name == "desktop" and bar["height"] > 64:
                problems.append(f"{name} at desktop: the top bar is {bar['height']}px tall (more than one row)")
            shoot(page, f"{name}-{size_name}")
    assert not problems, "\n".join(problems)


def test_on_a_phone_the_menu_opens_the_dashboard_navigation_and_the_account_menu_reaches_account(
    context, console, smtp
):
    page = console.attach(context.new_page())
    page.set_viewport_size(PHONE)
    sign_up(page, smtp)
    page.goto("/developer/usage")
    nav = page.get_by_role("navigation", name="Dashboard")
    expect(nav).to_be_hidden()
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.click()
    expect(menu).to_have_attribute("aria-expanded", "true")
    for label in ("Overview", "API keys", "Usage", "Request log", "Webhooks", "Billing", "Account", "Docs"):
        expect(nav.get_by_role("link", name=label, exact=True)).to_be_visible()
    assert_accessible(page, "phone menu open")
    shoot(page, "menu-open-phone")
    nav.get_by_role("link", name="Account", exact=True).click()
    expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    # The account menu in the top bar: Account settings and Log out, on every page.
    page.locator("#account-menu-box > summary").click()
    expect(page.get_by_role("link", name="Account settings")).to_be_visible()
    assert_accessible(page, "account menu open")
    shoot(page, "account-menu-phone")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))


def test_on_a_desktop_the_dashboard_navigation_shows_beside_the_page(context, console, smtp):
    page = console.attach(context.new_page())
    page.set_viewport_size(DESKTOP)
    sign_up(page, smtp)
    page.goto("/developer/usage")
    expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    nav = page.get_by_role("navigation", name="Dashboard")
    expect(nav.get_by_role("link", name="Usage", exact=True)).to_have_attribute("aria-current", "page")
    side, main = nav.bounding_box(), page.locator("main").bounding_box()
    assert side["x"] + side["width"] <= main["x"]  # beside, not above


def test_the_new_key_shows_on_one_line_with_its_copy_button_and_the_spent_limit_is_quiet(context, console, smtp):
    page = console.attach(context.new_page())
    page.set_viewport_size(PHONE)
    sign_up(page, smtp)
    expect(page.locator("#no-key")).to_contain_text("No API key yet")
    shoot(page, "api-keys-empty-phone")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key")
    expect(key).to_be_visible()
    box = key.evaluate("el => ({whiteSpace: getComputedStyle(el).whiteSpace, font: getComputedStyle(el).fontFamily})")
    assert box["whiteSpace"] == "nowrap" and "mono" in box["font"].lower()
    expect(page.get_by_role("button", name="Copy key")).to_be_visible()
    assert overflow(page) == 0
    assert_accessible(page, "new key on a phone")
    shoot(page, "api-keys-new-key-phone")
    page.get_by_role("link", name="I have saved it").click()
    # The panel is swapped for one without the key: a button clicked before that would be gone with
    # it (under load the swap can come after #key-hint is already visible).
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator("#key-hint")).to_be_visible()
    # Today's creation is spent: no loud button, no unusable select; the fine print is folded away.
    expect(page.locator("#key-create")).to_have_class(re.compile(r"\bbtn-quiet\b"))
    expect(page.locator("#grace")).to_have_count(0)
    expect(page.locator("#key-effects")).to_be_hidden()
    page.get_by_text("Learn more about creating").click()
    expect(page.locator("#key-effect-revoke")).to_be_visible()
    shoot(page, "api-keys-spent-phone")
    page.set_viewport_size(DESKTOP)
    shoot(page, "api-keys-spent-desktop")


def test_the_request_log_fits_a_desktop_becomes_cards_on_a_phone_and_opens_a_side_panel(
    context, console, app, live_server, smtp
):
    page = console.attach(context.new_page())
    page.set_viewport_size(DESKTOP)
    sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    request_id = _failed_call(app, live_server, key)
    page.goto("/developer/logs")
    table = page.locator("#log-table")
    expect(table).to_be_visible()
    # Every column fits: the table is no wider than its card, so nothing is clipped or scrolled.
    shoot(page, "logs-desktop")
    widths = table.evaluate("t => [t.scrollWidth, t.parentElement.clientWidth]")
    assert widths[0] <= widths[1], widths
    page.locator(f"#open-{request_id}").click()
    panel = page.locator("#log-detail.side-panel")
    expect(panel).to_contain_text("Problem returned")
    expect(panel).to_be_focused()
    expect(panel.get_by_role("link", name="Try this again")).to_be_visible()
    assert key not in page.content()
    assert_accessible(page, "request log with the detail panel open")
    shoot(page, "logs-detail-desktop")
    page.keyboard.press("Escape")
    expect(panel).to_have_count(0)
    expect(page.locator(f"#open-{request_id}")).to_be_focused()

    page.set_viewport_size(PHONE)
    page.reload()
    row = page.locator("#log-table tr.log-row").filter(has_text=request_id)
    expect(row.locator(".c-id")).to_be_visible()
    expect(row.locator(".c-path")).to_be_visible()
    expect(page.locator("#log-table thead")).to_be_hidden()
    assert overflow(page) == 0
    shoot(page, "logs-phone")
    page.locator(f"#open-{request_id}").click()
    expect(panel).to_contain_text("Problem returned")
    assert overflow(page) == 0
    shoot(
        page,
        "logs-detail-phone",
    )
    panel.get_by_role("link", name="Close").click()
    expect(panel).to_have_count(0)


def test_the_reference_tries_an_operation_with_a_pasted_key_that_never_leaves_the_page(
    context, console, app, live_server, smtp
):
    page = console.attach(context.new_page())
    page.set_viewport_size(DESKTOP)
    sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    sent = []
    page.on("request", lambda r: sent.append((r.url, r.headers.get("x-api-key"), r.post_data or "")))
    page.goto("/docs/api#op-create_job")
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#try-key-status")).to_contain_text(key[:8] + "…" + key[-4:])
    assert key not in page.content()  # shown masked only
    op = page.locator("#op-create_job")
    op.get_by_text("Try it").click()
    op.get_by_role("button", name="Send to the sandbox").click()
    expect(op.locator(".try-output .status")).to_have_text("202")
    shoot(page, "docs-reference-tried-desktop")
    page.screenshot(path=str(Path(SHOTS or "/tmp") / "docs-reference-viewport-desktop.png"))
    # The key went out only as the x-api-key header of the call to the sandbox, nowhere else.
    carrying = [url for url, header, body in sent if key in url or key in body or header == key]
    assert carrying and all("/api/sandbox/v1/jobs" in url for url in carrying), carrying
    assert all(header is None for url, header, _ in sent if "/api/sandbox/" not in url)
    assert_accessible(page, "reference with a try-it answer")
    page.set_viewport_size(PHONE)
    page.goto("/docs/api#op-get_job&job_id=job_0a1b2c3d4e5f60718293")
    expect(page.locator("#try-get_job")).to_have_attribute("open", "")
    expect(page.locator("#try-get_job-job_id")).to_have_value("job_0a1b2c3d4e5f60718293")
    assert overflow(page) == 0
    page.screenshot(path=str(Path(SHOTS or "/tmp") / "docs-reference-viewport-phone.png"))
