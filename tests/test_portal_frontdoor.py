"""The portal's front door: the signed-in Overview and its checklist, the request log's detail, the
docs site and its reference rendered from the spec (what a developer reads, over HTTP)."""

import html
import json
import re
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa
import yaml

from levqor_core.accounts import service as accounts
from levqor_core.extensions import db
from levqor_core.requestlog.models import RequestLogEntry

from .webhook_helpers import hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recorder(app):
    rec = app.extensions["levqor.request_log"]
    rec.clear()
    with app.app_context():
        db.session.execute(sa.delete(RequestLogEntry))
        db.session.commit()
    return rec


def ticked(html: str) -> dict[str, bool]:
    """The Overview checklist's steps: id → done."""
    return {m[0]: m[1] == "true" for m in re.findall(r'id="step-([a-z-]+)" data-done="(true|false)"', html)}


def test_the_overview_checklist_ticks_as_the_account_acts(cx, portal, recorder, hook):
    dev = portal().sign_up(confirm=False)
    steps = ticked(dev.client.get("/developer").text)
    assert list(steps) == ["confirm-email", "create-key", "sandbox-call", "first-job", "webhook-endpoint", "live-call"]
    assert not any(steps.values())

    with cx.app.app_context():
        accounts.confirm(accounts.by_email(dev.email))
    assert ticked(dev.client.get("/developer").text)["confirm-email"]

    key = dev.new_key().json()["key"]
    assert ticked(dev.client.get("/developer").text)["create-key"]

    api = {"x-api-key": key}
    assert dev.client.get("/api/sandbox/v1/workflows", headers=api).status_code == 200
    steps = ticked(dev.client.get("/developer").text)
    assert steps["sandbox-call"] and not steps["first-job"]  # from today's counters, before any flush

    job = dev.client.post("/api/sandbox/v1/jobs", headers=api, json={"workflow": "echo", "input": {"a": 1}})
    assert job.status_code == 202
    recorder.flush()
    steps = ticked(dev.client.get("/developer").text)
    assert steps["first-job"] and not steps["webhook-endpoint"]

    endpoint = dev.client.post(
        "/api/sandbox/v1/webhook_endpoints", headers=api, json={"url": hook.url(), "events": ["job.succeeded"]}
    )
    assert endpoint.status_code == 201, endpoint.text
    steps = ticked(dev.client.get("/developer").text)
    assert steps["webhook-endpoint"] and not steps["live-call"]

    assert dev.client.get("/api/v1/workflows", headers=api).status_code == 200
    done = dev.client.get("/developer").text
    assert all(ticked(done).values()) and 'id="checklist-done"' in done


def test_the_overview_shows_this_accounts_calls_errors_and_last_five(cx, portal, recorder):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    api = {"x-api-key": key}
    for _ in range(3):
        assert dev.client.get("/api/sandbox/v1/workflows", headers=api).status_code == 200
    missing = dev.client.get("/api/sandbox/v1/jobs/job_0a1b2c3d4e5f60718293", headers=api)
    assert missing.status_code == 404
    recorder.flush()
    html = dev.client.get("/developer").text
    # 1 error of 5 calls: the 4 with the key, and the portal's own call that created it.
    assert 'id="overview-error-rate">20.0 %<' in html and "1 of 5 calls" in html
    recent = re.search(r'<ul class="call-list">(.*?)</ul>', html, re.S).group(1)
    assert recent.count("<li>") == 5 and missing.headers["Request-Id"] in recent
    # A stranger still gets the marketing page.
    assert "Build with Levqor" in cx.test_client().get("/developer").text


HX = {"HX-Request": "true", "HX-Target": "log-detail"}


def test_a_failed_calls_detail_shows_its_problem_body_and_never_the_key_a_secret_or_a_password(cx, portal, recorder):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    body = {"workflow": "no-such", "input": {"password": "hunter2-secret", "hook": "whsec_c2VjcmV0c2VjcmV0", "k": key}}
    failed = dev.client.post("/api/sandbox/v1/jobs?api_key=" + key, headers={"x-api-key": key}, json=body)
    assert failed.status_code >= 400
    request_id = failed.headers["Request-Id"]
    recorder.flush()
    for headers in ({}, HX):  # the page, and the side panel htmx asks for
        shown = dev.client.get(f"/developer/logs/{request_id}", headers=headers)
        assert shown.status_code == 200
        text = html.unescape(shown.text)
        problem = re.search(r'aria-label="Response body"><code>(.*?)</code>', text, re.S).group(1)
        assert json.loads(problem)["request_id"] == request_id and json.loads(problem)["status"] == failed.status_code
        for secret in (key, "hunter2-secret", "whsec_c2VjcmV0c2VjcmV0", key[4:20]):
            assert secret not in text
        assert re.search(r'"password":\s*"\(redacted\)"', text)
    panel = dev.client.get(f"/developer/logs/{request_id}", headers=HX).text
    assert "side-panel" in panel and "<html" not in panel
    # "Try this again" opens the same operation in the reference; a redacted body is not carried over.
    try_url = html.unescape(re.search(r'id="try-again" href="([^"]+)"', panel).group(1))
    assert try_url.startswith("/docs/api#op-sandbox_create_job&") and "body=" not in try_url


def test_try_this_again_carries_the_path_parameters_query_and_a_whole_body(cx, portal, recorder):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    api = {"x-api-key": key}
    missing = dev.client.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293", headers=api)
    invalid = dev.client.post("/api/v1/jobs", headers=api, json={"workflow": "echo", "oops": True})
    listed = dev.client.get("/api/v1/jobs?limit=5", headers=api)
    recorder.flush()

    def try_url(response) -> str:
        page = dev.client.get(f"/developer/logs/{response.headers['Request-Id']}").text
        return html.unescape(re.search(r'id="try-again" href="([^"]+)"', page).group(1))

    assert try_url(missing) == "/docs/api#op-get_job&job_id=job_0a1b2c3d4e5f60718293"
    assert try_url(listed) == "/docs/api#op-list_jobs&limit=5"
    anchor, _, params = try_url(invalid).partition("&")
    assert anchor == "/docs/api#op-create_job"
    assert json.loads(parse_qs(params)["body"][0]) == {"workflow": "echo", "oops": True}


def public_and_internal_operations() -> tuple[set[str], set[str]]:
    spec = yaml.safe_load((ROOT / "openapi" / "openapi.yaml").read_text())
    public, internal = set(), set()
    for item in spec["paths"].values():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                (internal if operation.get("x-internal") else public).add(operation["operationId"])
    return public, internal


def test_the_reference_lists_each_public_operation_once_and_no_internal_one_with_three_samples(client):
    public, internal = public_and_internal_operations()
    assert internal >= {"stripe_webhook", "create_key", "create_checkout_session"}  # the spec marks them
    page = client.get("/docs/api")
    assert page.status_code == 200
    text = page.text
    shown = re.findall(r'<article class="op" id="op-([a-z_]+)"', text)
    assert sorted(shown) == sorted(public)  # each public operation, once
    for operation_id in internal:
        assert f"op-{operation_id}" not in text
    assert "/billing/webhook" not in text and "Stripe webhook endpoint" not in text
    for operation_id in public:
        op = re.search(rf'<article class="op" id="op-{operation_id}".*?</article>', text, re.S).group(0)
        for lang in ("curl", "python", "node"):
            assert f'id="code-{operation_id}-{lang}"' in op, (operation_id, lang)
    # The examples use the environment variable, never a key or the portal's CSRF token; no Swagger UI.
    assert "X-CSRFToken" not in text and not re.search(r"lvq_[0-9a-f]{32}", text)
    assert "swagger" not in text.lower()
    assert 'href="/api/postman.json"' in text


def test_a_response_description_with_a_code_block_keeps_its_blocks_in_the_reference(client):
    """The event stream's format is a fenced example in its 200's description: the reference shows
    it as a code block under its own paragraph, not run into one line of text."""
    text = client.get("/docs/api").text
    op = re.search(r'<article class="op" id="op-stream_events".*?</article>', text, re.S).group(0)
    shown = re.search(r'<div class="response-text">.*?</div>', op, re.S).group(0)
    assert re.search(r'<pre tabindex="0"><code>id: \d+-0\nevent: webhook\ndata: ', shown), shown[:600]
    assert shown.count("<p>") >= 2  # the lead-in and the events, each its own paragraph


def test_the_docs_site_has_a_left_navigation_and_every_guide(client):
    home = client.get("/docs").text
    nav = re.search(r'<nav id="side-nav" class="side-nav docs-nav".*?</nav>', home, re.S).group(0)
    for slug in ("errors", "pagination", "idempotency", "webhooks", "rate-limits"):
        assert f'href="/docs/guides/{slug}"' in nav
        page = client.get(f"/docs/guides/{slug}")
        assert page.status_code == 200 and page.text.count("<h1") == 1
    assert 'href="/docs/getting-started"' in nav and 'href="/docs/api#tag-jobs"' in nav
    start = html.unescape(client.get("/docs/getting-started").text)
    for step in (
        "1. Create a key",
        "2. Make a sandbox call",
        "3. Submit a job and poll it",
        "4. Receive a webhook",
        "5. Go live",
    ):
        assert step in start
    assert "$BASE" not in start and "/api/sandbox/v1/jobs" in start
    webhooks = client.get("/docs/guides/webhooks").text
    assert "verify_webhook" in webhooks and "verifyWebhook" in webhooks
    # Every code block of a guide has its Copy button.
    assert webhooks.count("<pre") == webhooks.count('class="btn btn-small btn-copy" data-copy="#snippet-') > 0
    assert client.get("/docs/guides/no-such-guide").status_code == 404


def test_sign_up_errors_sit_beside_their_fields_one_sentence_each(client):
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get("/signup").text).group(1)
    refused = client.post("/signup", data={"email": "not-an-email", "password": "short", "csrf_token": token})
    assert refused.status_code == 400
    text = html.unescape(refused.text)
    email_error = re.search(r'<p class="field-error" id="email-error" role="alert">(.*?)</p>', text, re.S).group(1)
    password_error = re.search(r'<p class="field-error" id="password-error" role="alert">(.*?)</p>', text, re.S)
    assert email_error.strip().endswith(".") and "address" in email_error.lower()
    assert "8 characters." in password_error.group(1)
    assert 'id="form-error"' not in text  # nothing joined into one banner away from the fields
    email_input = re.search(r'<input[^>]*id="email"[^>]*>', text).group(0)
    assert 'aria-invalid="true"' in email_input and 'aria-describedby="email-error"' in email_input


def test_status_and_the_spec_open_readable_pages_from_the_footer(client):
    page = client.get("/developer").text
    footer = re.search(r'<footer class="site-footer">.*?</footer>', page, re.S).group(0)
    assert 'href="/status"' in footer and 'href="/api/health"' not in footer
    assert 'href="/docs/api#openapi"' in footer and 'href="/api/openapi.json"' not in footer
    status = client.get("/status")
    assert status.status_code == 200 and "Operational" in status.text and 'href="/api/health"' in status.text
    assert (
        'id="openapi" href="/api/openapi.json"' in client.get("/docs/api").text
        or 'href="/api/openapi.json" id="openapi"' in client.get("/docs/api").text
    )


def test_the_overview_still_answers_with_redis_stopped(portal, recorder, outage):
    dev = portal().sign_up()
    assert dev.new_key().status_code == 201
    outage()
    page = dev.client.get("/developer")
    assert page.status_code == 200
    assert ticked(page.text)["create-key"]  # the checklist reads the database, not only Redis
