"""/developer/webhooks over HTTP: create (the secret shown once), refusals in the form, delete,
send a test event, the self-polling delivery log, resend, and isolation between accounts."""

import html
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from levqor_core import tiers
from levqor_core.extensions import db
from levqor_core.webhooks import service as webhooks
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

from .webhook_helpers import attempt_pending, hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)

HX = {"HX-Request": "true"}


def add_endpoint(p, url, events=("job.succeeded",), mode="live", htmx=True):
    """Post the create form, as htmx does (or as a browser without JavaScript)."""
    data = {"url": url, "events": list(events), "mode": mode}
    if htmx:
        headers = {**HX, "HX-Target": "webhook-create", "X-CSRFToken": p.csrf}
        return p.client.post("/developer/webhooks", data=data, headers=headers)
    return p.client.post("/developer/webhooks", data={**data, "csrf_token": p.csrf})


def post(p, path):
    return p.client.post(path, headers={**HX, "X-CSRFToken": p.csrf})


def endpoint_ids(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(WebhookEndpoint.id).order_by(WebhookEndpoint.created_at)))


def secret_in(html: str) -> str:
    return re.search(r'<code id="new-webhook-secret"[^>]*>(whsec_[^<]+)</code>', html).group(1)


def test_the_page_needs_a_session_and_is_in_the_navigation(client, portal):
    assert client.get("/developer/webhooks").headers["Location"].startswith("/login")
    htmx = client.get("/developer/webhooks/we_x/deliveries", headers=HX)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/login")
    p = portal().sign_up()
    page = p.client.get("/developer/webhooks")
    assert page.status_code == 200
    assert 'href="/developer/webhooks" aria-current="page">Webhooks</a>' in page.text
    assert 'href="/developer/webhooks"' in p.client.get("/developer/api-keys").text
    # Every visible input has a label; the checkboxes and radios are grouped under a legend.
    for input_id in re.findall(r'<input id="([^"]+)"', page.text):
        assert f'<label for="{input_id}">' in page.text
    # An event checkbox per event type (key.leaked the last one added), each labelled and described
    # by a line of what it means.
    boxes = re.findall(
        r'<input type="checkbox" name="events" value="([^"]+)" id="([^"]+)"\s*aria-describedby="([^"]+)"', page.text
    )
    assert len(boxes) == len(webhooks.EVENT_TYPES) == 8
    for _, box_id, described_by in boxes:
        assert f'<label for="{box_id}">' in page.text and f'id="{described_by}">' in page.text
    assert "No live endpoints yet." in page.text and "No sandbox endpoints yet." in page.text


def test_create_shows_the_secret_once_and_the_list_never_shows_it(app, portal, hook, private_targets_allowed):
    p = portal().sign_up()
    made = add_endpoint(p, hook.url(), events=["job.succeeded", "key.revoked"])
    assert made.status_code == 200
    assert made.headers["Cache-Control"] == "no-store"
    assert made.headers["HX-Trigger"] == "webhooks-changed"
    assert made.text.lstrip().startswith('<section id="webhook-create"')  # the fragment, not the page
    secret = secret_in(made.text)
    [endpoint_id] = endpoint_ids(app)
    assert endpoint_id in made.text

    listed = p.client.get("/developer/webhooks", headers={**HX, "HX-Target": "webhook-endpoints"})
    assert listed.text.lstrip().startswith('<section id="webhook-endpoints"')
    assert endpoint_id in listed.text and hook.url().replace("&", "&amp;") in listed.text
    page = p.client.get("/developer/webhooks")
    form_again = p.client.get("/developer/webhooks", headers={**HX, "HX-Target": "webhook-create"})
    for later in (listed.text, page.text, form_again.text):
        assert secret not in later and "whsec_" not in later

    # Without JavaScript the whole page answers, with the real status and the secret the once.
    plain = add_endpoint(p, hook.url(), htmx=False)
    assert plain.status_code == 201 and "<html" in plain.text and plain.headers["Cache-Control"] == "no-store"
    assert secret_in(plain.text) != secret


def test_a_private_url_is_refused_with_a_readable_message_in_the_form(app, portal):
    p = portal().sign_up()
    refused = add_endpoint(p, "https://127.0.0.1/hook")
    assert refused.status_code == 200  # htmx swaps only 2xx: the refusal shows in the form
    assert "role=\"alert\">The host '127.0.0.1' resolves to a non-public address" in html.unescape(refused.text)
    assert 'value="https://127.0.0.1/hook"' in refused.text and 'aria-invalid="true"' in refused.text
    assert endpoint_ids(app) == []
    plain = add_endpoint(p, "http://127.0.0.1:9/hook", htmx=False)
    assert plain.status_code == 400 and "Webhook URLs must use https." in plain.text
    nothing_chosen = add_endpoint(p, "https://127.0.0.1/hook", events=())
    assert "Subscribe to at least one event type." in nothing_chosen.text


def test_the_endpoint_cap_is_a_readable_message(app, portal, private_targets_allowed):
    p = portal().sign_up()
    limit = tiers.get(tiers.DEFAULT_TIER).max_webhook_endpoints
    for _ in range(limit):
        assert "new-webhook-secret" in add_endpoint(p, "http://127.0.0.1:9/hook").text
    refused = add_endpoint(p, "http://127.0.0.1:9/hook")
    assert f"Your plan allows {limit} webhook endpoints here; delete one first." in refused.text
    assert len(endpoint_ids(app)) == limit
    assert "new-webhook-secret" in add_endpoint(p, "http://127.0.0.1:9/hook", mode="sandbox").text


def test_actions_need_the_csrf_token(app, portal, private_targets_allowed):
    p = portal().sign_up()
    refused = p.client.post("/developer/webhooks", data={"url": "http://127.0.0.1:9/h", "events": ["job.failed"]})
    assert refused.status_code in (400, 403) and endpoint_ids(app) == []


def test_send_test_shows_a_polling_log_and_resend_reaches_the_receiver_with_the_same_id(
    app, portal, hook, private_targets_allowed
):
    p = portal().sign_up()
    secret = secret_in(add_endpoint(p, hook.url(), events=["job.failed"]).text)
    [endpoint_id] = endpoint_ids(app)

    sent = post(p, f"/developer/webhooks/{endpoint_id}/test")
    assert sent.status_code == 200
    assert sent.text.lstrip().startswith(f'<div id="deliveries-{endpoint_id}"')
    assert 'hx-trigger="every 2s"' in sent.text and 'data-status="pending"' in sent.text  # polls while pending

    attempt_pending(app)
    log = p.client.get(f"/developer/webhooks/{endpoint_id}/deliveries", headers=HX)
    assert 'data-status="succeeded"' in log.text and "every 2s" not in log.text  # done: the polling stops
    assert "<code>ping</code>" in log.text and "<td>200</td>" in log.text and "thanks" in log.text
    [delivery_id] = re.findall(r'id="delivery-(msg_[0-9a-f]+)"', log.text)

    resent = post(p, f"/developer/webhooks/deliveries/{delivery_id}/resend")
    assert resent.status_code == 200 and "every 2s" in resent.text
    attempt_pending(app)
    assert [got["headers"]["webhook-id"] for got in hook.received] == [delivery_id, delivery_id]
    for got in hook.received:
        assert Webhook(secret).verify(got["body"], got["headers"])["type"] == "ping"
    with app.app_context():
        assert db.session.get(WebhookDelivery, delivery_id).status == DeliveryStatus.SUCCEEDED


def test_the_log_is_newest_first_with_its_columns(app, portal, private_targets_allowed):
    p = portal().sign_up()
    add_endpoint(p, "http://127.0.0.1:9/hook", events=["job.failed", "job.succeeded"])
    [endpoint_id] = endpoint_ids(app)
    with app.app_context():
        from levqor_core.webhooks import service

        start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
        for minutes, event_type in ((0, "job.failed"), (5, "job.succeeded")):
            service.record_event(
                db.session.get(WebhookEndpoint, endpoint_id).account_id,
                event_type,
                {"id": "job_1"},
                sandbox=False,
                now=start + timedelta(minutes=minutes),
            )
        db.session.commit()
    log = p.client.get(f"/developer/webhooks/{endpoint_id}/deliveries", headers=HX).text
    assert log.index("<code>job.succeeded</code>") < log.index("<code>job.failed</code>")
    for column in ("Event", "Status", "Attempts", "Last code", "Latency", "Response", "Next attempt", "Created"):
        assert f">{column}" in log
    assert "2026-12-01 09:05:00" in log


def test_a_retry_hours_away_is_polled_slowly_and_none_pending_not_at_all(app, portal, private_targets_allowed):
    p = portal().sign_up()
    add_endpoint(p, "http://127.0.0.1:9/hook")
    [endpoint_id] = endpoint_ids(app)
    post(p, f"/developer/webhooks/{endpoint_id}/test")
    log = lambda: p.client.get(f"/developer/webhooks/{endpoint_id}/deliveries", headers=HX).text  # noqa: E731
    assert 'hx-trigger="every 2s"' in log()
    with app.app_context():
        db.session.execute(sa.update(WebhookDelivery).values(next_attempt_at=datetime.now(UTC) + timedelta(hours=2)))
        db.session.commit()
    assert 'hx-trigger="every 30s"' in log()
    with app.app_context():
        db.session.execute(sa.update(WebhookDelivery).values(status=DeliveryStatus.FAILED, next_attempt_at=None))
        db.session.commit()
    assert "hx-trigger" not in log()


def test_delete_asks_first_and_removes_the_endpoint(app, portal, private_targets_allowed):
    p = portal().sign_up()
    add_endpoint(p, "http://127.0.0.1:9/hook")
    [endpoint_id] = endpoint_ids(app)
    assert 'hx-confirm="Delete this endpoint?' in p.client.get("/developer/webhooks").text
    gone = post(p, f"/developer/webhooks/{endpoint_id}/delete")
    assert gone.status_code == 200 and gone.text.lstrip().startswith('<section id="webhook-endpoints"')
    assert endpoint_id not in gone.text and endpoint_ids(app) == []
    # A plain form post comes back to the page.
    add_endpoint(p, "http://127.0.0.1:9/hook")
    [again] = endpoint_ids(app)
    plain = p.client.post(f"/developer/webhooks/{again}/delete", data={"csrf_token": p.csrf})
    assert plain.status_code == 303 and plain.headers["Location"] == "/developer/webhooks"


def test_another_accounts_endpoint_and_delivery_cannot_be_touched(app, portal, private_targets_allowed):
    owner, stranger = portal().sign_up(), portal().sign_up()
    add_endpoint(owner, "http://127.0.0.1:9/hook")
    [endpoint_id] = endpoint_ids(app)
    post(owner, f"/developer/webhooks/{endpoint_id}/test")
    with app.app_context():
        delivery_id = db.session.scalar(sa.select(WebhookDelivery.id))
        db.session.execute(sa.update(WebhookDelivery).values(status=DeliveryStatus.FAILED, attempts=8))
        db.session.commit()

    for path in (
        f"/developer/webhooks/{endpoint_id}/delete",
        f"/developer/webhooks/{endpoint_id}/test",
        f"/developer/webhooks/deliveries/{delivery_id}/resend",
    ):
        assert post(stranger, path).status_code == 404, path
    assert stranger.client.get(f"/developer/webhooks/{endpoint_id}/deliveries", headers=HX).status_code == 404
    assert endpoint_id not in stranger.client.get("/developer/webhooks").text
    assert endpoint_ids(app) == [endpoint_id]
    with app.app_context():
        untouched = db.session.get(WebhookDelivery, delivery_id)
        assert (untouched.status, untouched.attempts) == (DeliveryStatus.FAILED, 8)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 1


def test_portal_webhook_actions_share_the_accounts_session_burst_limit(app, portal, private_targets_allowed):
    """A script driving the portal (test events, resends, create/delete in a loop) meets the tier's
    calls-per-second limit per account, like the session's API calls; other accounts do not."""
    p, other = portal().sign_up(), portal().sign_up()
    add_endpoint(p, "http://127.0.0.1:9/hook")
    add_endpoint(other, "http://127.0.0.1:9/hook")
    mine, theirs = endpoint_ids(app)
    burst = tiers.get(tiers.DEFAULT_TIER).burst_per_second
    # 2 × burst + 1 within two one-second windows at most: one window holds more than the burst
    # (a few rounds, should a loaded machine spread one round over more than a second).
    answers = []
    for _ in range(5):
        answers += [post(p, f"/developer/webhooks/{mine}/test") for _ in range(2 * burst + 1)]
        if any(a.status_code == 429 for a in answers):
            break
    refused = [a for a in answers if a.status_code == 429]
    assert refused and all(a.status_code in (200, 429) for a in answers)
    assert f"More than {burst} calls per second." in refused[0].text and int(refused[0].headers["Retry-After"]) >= 1
    assert post(other, f"/developer/webhooks/{theirs}/test").status_code == 200
