"""/developer/webhooks in headless Chromium: add an endpoint pointing at a local receiver, send a
test event, watch the delivery log update itself, resend, delete."""

import re

from playwright.sync_api import expect
from standardwebhooks.webhooks import Webhook

from ..webhook_helpers import attempt_pending, hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)
from .journeys import sign_up


def test_add_an_endpoint_send_a_test_event_see_it_delivered_resend_it_and_delete(
    app, context, console, shots, hook, smtp
):
    page = console.attach(context.new_page())
    sign_up(page, smtp)
    page.get_by_role("link", name="Webhooks").click()
    expect(page).to_have_url(re.compile(r"/developer/webhooks$"))
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()

    page.get_by_label("Endpoint URL").fill(hook.url())
    page.get_by_label("job.failed").check()
    page.get_by_role("button", name="Add endpoint").click()
    secret_box = page.locator("#new-webhook-secret")
    expect(secret_box).to_be_visible()
    secret = secret_box.inner_text().strip()
    assert secret.startswith("whsec_")
    # The list refreshed itself (HX-Trigger) and shows the endpoint, never its secret.
    endpoint = page.locator(".webhook-endpoint")
    expect(endpoint).to_have_count(1)
    expect(endpoint).to_contain_text(hook.url())
    assert secret not in page.locator("#webhook-endpoints").inner_html()
    shots(page, "webhooks-created")
    page.get_by_role("link", name="I have saved it").click()
    expect(page.locator("#new-webhook-secret")).to_have_count(0)
    expect(page.get_by_label("Endpoint URL")).to_have_value("")

    page.get_by_role("button", name=f"Send test event to {hook.url()}").click()
    row = endpoint.locator("tbody tr").first
    expect(row).to_have_attribute("data-status", "pending")
    expect(row).to_contain_text("ping")
    attempt_pending(app)
    # The log polls itself while the delivery is pending, then shows the outcome.
    expect(row).to_have_attribute("data-status", "succeeded", timeout=10_000)
    expect(row).to_contain_text("200")
    expect(row).to_contain_text("thanks")
    shots(page, "webhooks-delivered")

    row.get_by_role("button", name=re.compile(r"^Resend ping delivery")).click()
    expect(row).to_have_attribute("data-status", "pending")
    attempt_pending(app)
    expect(row).to_have_attribute("data-status", "succeeded", timeout=10_000)
    ids = [got["headers"]["webhook-id"] for got in hook.received]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert all(Webhook(secret).verify(got["body"], got["headers"])["type"] == "ping" for got in hook.received)

    page.get_by_role("button", name=f"Delete endpoint {hook.url()}").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator(".webhook-endpoint")).to_have_count(0)
    expect(page.locator("#webhook-endpoints")).to_contain_text("No live endpoints yet.")
    assert console.errors == []


def test_a_private_url_is_refused_in_the_form(context, console, smtp):
    page = console.attach(context.new_page())
    sign_up(page, smtp)
    page.goto("/developer/webhooks")
    page.get_by_label("Endpoint URL").fill("https://127.0.0.1/hook")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#webhook-error")).to_contain_text("non-public address")
    expect(page.get_by_label("Endpoint URL")).to_have_value("https://127.0.0.1/hook")
    expect(page.locator(".webhook-endpoint")).to_have_count(0)
    assert console.errors == []
