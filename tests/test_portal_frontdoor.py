"""The portal's front door: the signed-in Overview and its checklist, the request log's detail, the
docs site and its reference rendered from the spec (what a developer reads, over HTTP)."""

import html
import json
import re
from urllib.parse import parse_qs

import pytest
import sqlalchemy as sa

from levqor_core.accounts import service as accounts
from levqor_core.extensions import db
from levqor_core.requestlog.models import RequestLogEntry

from .webhook_helpers import hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)


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
    assert all(ticked(dev.client.get("/developer").text).values())


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
        problem = re.search(r'aria-label="Problem returned"><code>(.*?)</code>', text, re.S).group(1)
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
