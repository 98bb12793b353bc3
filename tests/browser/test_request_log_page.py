"""/developer/logs in headless Chromium: the htmx filter, "Load more" and the detail fragment."""

from datetime import timedelta

import httpx
import sqlalchemy as sa
from playwright.sync_api import expect

from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.requestlog import recorder as request_log
from levqor_core.requestlog.models import RequestLogEntry

from .journeys import sign_up


def test_find_a_failed_call_filter_load_more_and_open_its_detail(context, console, shots, app, live_server, smtp):
    recorder = app.extensions["levqor.request_log"]
    recorder.clear()
    page = console.attach(context.new_page())
    email = sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text().strip()
    with httpx.Client(base_url=live_server, headers={"x-api-key": key}) as api:
        failed = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293")
        ok = api.get("/api/v1/workflows")
    assert (failed.status_code, ok.status_code) == (404, 200)
    recorder.flush()
    with app.app_context():
        account_id = db.session.scalar(sa.select(Account.id).where(Account.email == email))
        earlier = utcnow() - timedelta(hours=1)
        older = [
            request_log.row(
                request_log.entry(
                    (earlier - timedelta(seconds=i)).timestamp(),
                    account_id,
                    None,
                    f"req_{i:024x}",
                    "GET",
                    "/api/usage",
                    b"",
                    200,
                    0.002,
                    None,
                    None,
                )
            )
            for i in range(60)
        ]
        db.session.execute(sa.insert(RequestLogEntry), older)
        db.session.commit()

    page.get_by_role("link", name="Request log").click()
    expect(page.get_by_role("heading", name="Request log", level=1)).to_be_visible()
    rows = page.locator("#request-log tbody tr")
    expect(rows).to_have_count(50)
    # The rows are drawn before the deferred scripts run: a click before htmx has taken "Load more"
    # over follows its link to the next page alone (as it should without JavaScript).
    page.wait_for_load_state("load")
    page.get_by_role("link", name="Load more").click()
    expect(rows).to_have_count(62)  # our two calls and the 60 older ones (the key was made on a portal page)
    expect(page.get_by_role("link", name="Load more")).to_have_count(0)

    page.get_by_label("Status").select_option("4xx")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("404")
    assert "status=4xx" in page.url  # the filtered view has its own address
    rows.first.get_by_role("link", name=failed.headers["Request-Id"]).click()
    detail = page.locator("#log-detail")
    expect(detail).to_contain_text("Problem returned")
    expect(detail).to_contain_text(failed.headers["Request-Id"])
    expect(detail).to_contain_text("not-found")
    assert key not in page.content()
    shots(page, "developer-logs")
    assert console.errors == []
