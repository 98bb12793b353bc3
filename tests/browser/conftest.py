"""Browser fixtures: the app on a real uvicorn server and Debian's Chromium driven by Playwright."""

import shutil
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect

from ..servers import free_port

# As long as the pages' own default (context.set_default_timeout): a busy CI machine can take more
# than Playwright's 5 s for an htmx round trip.
expect.set_options(timeout=15_000)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def live_server(cx):
    """The same Connexion app the other tests use, served over real HTTP on a free port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(cx, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    _SERVERS[url] = server
    yield url
    server.should_exit = True
    thread.join(timeout=10)


_SERVERS: dict = {}  # live_server's uvicorn server by its URL


def _drain(url: str, timeout: float = 10) -> None:
    """Wait until the live server answers no request: one a closed page had sent (an htmx poll)
    would otherwise finish during the next test, its log entry under that test's account 1."""
    server = _SERVERS[url]
    deadline = time.monotonic() + timeout
    while server.server_state.tasks and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make system-deps` installs Debian's chromium package")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


DESKTOP = {"width": 1280, "height": 900}


def new_profile(browser, live_server):
    """A browser profile (cookies, cache, clipboard permission) on the live server."""
    ctx = browser.new_context(base_url=live_server, viewport=DESKTOP)
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server)
    ctx.set_default_timeout(15_000)
    return ctx


@pytest.fixture
def context(browser, live_server):
    """A fresh browser profile per test."""
    ctx = new_profile(browser, live_server)
    yield ctx
    ctx.close()
    _drain(live_server)


@pytest.fixture(scope="module")
def _module_profile(browser, live_server):
    ctx = new_profile(browser, live_server)
    yield ctx
    ctx.close()


@pytest.fixture
def reused_page(_module_profile, live_server):
    """One page of one profile for a whole module, emptied between tests (no cookies, the desktop
    size, a blank document, no request in flight): for sweeps of many short tests, where a fresh
    profile's new renderer process and cold compile of the page's scripts (axe-core's 550 kB)
    cost more Chromium CPU than the test itself (tests/browser/test_accessibility.py).
    The portal keeps nothing in web storage, so cookies are all a signed-in state leaves."""
    ctx = _module_profile
    page = ctx.pages[0] if ctx.pages else ctx.new_page()
    yield page
    for other in ctx.pages[1:]:
        other.close()
    page.goto("about:blank")  # ends the last page's htmx polls
    ctx.clear_cookies()
    page.set_viewport_size(DESKTOP)
    _drain(live_server)


class ConsoleWatch:
    """Collects console errors and CSP violations a page reports."""

    def __init__(self):
        self.errors: list[str] = []

    def attach(self, page):
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page


@pytest.fixture
def console():
    return ConsoleWatch()


@pytest.fixture(scope="session")
def shots():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str, full_page: bool = True):
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    return shot
