"""The developer portal over HTTP: pages, fragments, CSRF, isolation between accounts, assets."""

import html
import re
import uuid
from datetime import datetime, timedelta

import pytest
from starlette.testclient import TestClient

from levqor_core import tiers
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import format as key_format
from levqor_core.keys import service as keys
from levqor_core.keys.models import KeyEvent
from portal.helpers import charts, sdk_examples, snippets
from portal.helpers import sandbox_calls as portal_sandbox

from .conftest import PASSWORD, Portal, csrf_from

HX = {"HX-Request": "true"}


def run_example(p, example="submit-job", htmx=True):
    headers = {**HX, "X-CSRFToken": p.csrf} if htmx else {}
    data = {"example": example, "sdk": "python"}
    if not htmx:
        data["csrf_token"] = p.csrf
    return p.client.post("/docs/sdk/run", data=data, headers=headers)


def forget_key_creations(app):
    """As if a day had passed for the daily key-creation limit."""
    r = app.extensions["levqor.redis"]
    r.delete(*r.keys(f"LIMITS:LIMITER/{app.config['RATELIMIT_KEY_PREFIX']}/key-new:*"))


def portal_key_action(p, action: str, htmx: bool = True, **form):
    """Create/roll ("new") or revoke from the key panel, as its htmx form (or a plain form) posts it."""
    headers = {**HX, "HX-Target": "key-panel", "X-CSRFToken": p.csrf} if htmx else {}
    data = form if htmx else {**form, "csrf_token": p.csrf}
    return p.client.post(f"/developer/api-keys/{action}", data=data, headers=headers)


def account_id_of(app, email: str) -> int:
    with app.app_context():
        return db.session.query(keys.Account).filter_by(email=email).one().id


def sandbox_today(html: str) -> int:
    return int(re.search(r'id="sandbox-today">(\d+)<', html).group(1))


# ---- pages ------------------------------------------------------------------------------------


def test_overview_has_calls_to_action_and_a_curl_quick_start(client, app):
    page = client.get("/developer")
    assert page.status_code == 200
    html = page.text
    assert "Build with Levqor" in html
    for label, href in (
        ("Get API Key", "/developer/api-keys"),
        ("View Docs", "/docs/api"),
        ("Try Sandbox", "/docs/sdk"),
    ):
        assert re.search(rf'href="{href}"[^>]*>{label}</a>', html), label
    # The public base URL, never the request's Host (testserver).
    assert f"curl -X POST &#34;{app.config['PUBLIC_BASE_URL']}/api/sandbox/v1/jobs&#34;" in html
    assert "testserver" not in html
    assert "x-api-key: $LEVQOR_API_KEY" in html


def test_navbar_links_to_developer_docs_pricing_and_account(client, portal):
    anonymous = client.get("/pricing").text
    for href in ("/developer", "/docs/api", "/pricing", "/login", "/signup"):
        assert f'href="{href}"' in anonymous
    assert 'href="/pricing" aria-current="page"' in anonymous
    p = portal().sign_up()
    signed_in = p.client.get("/developer").text
    assert 'href="/developer/api-keys"' in signed_in and p.email in signed_in
    assert 'action="/logout"' in signed_in and 'href="/login"' not in signed_in


def test_api_keys_page_requires_login(client):
    response = client.get("/developer/api-keys")
    assert response.status_code == 302
    assert response.headers["location"].startswith("/login?next=")


def test_pricing_table_comes_from_the_tier_table_with_stripe_upgrade_forms(client, portal, app, monkeypatch):
    # Without Stripe (as here by default) the paid plans say they are not available, as billing does.
    off = client.get("/pricing").text
    assert 'action="/billing/upgrade"' not in off and "Upgrade via Stripe" not in off
    assert 'id="billing-off"' in off and "Not available on this server" in off
    monkeypatch.setitem(app.config, "STRIPE_SECRET_KEY", "sk_test_x")
    html = client.get("/pricing").text
    assert 'id="billing-off"' not in html
    for tier in tiers.TIERS.values():
        row = re.search(rf'<tr id="tier-{tier.name}".*?</tr>', html, re.S).group(0)
        assert tier.label in row and tier.quota_label in row and tier.support in row
        assert (f"${tier.price_usd}" if tier.price_usd else "Free") in row
        upgrade = 'action="/billing/upgrade"' in row
        assert upgrade == bool(tier.price_usd)
        if upgrade:
            assert f'name="tier" value="{tier.name}"' in row and 'name="csrf_token"' in row
            assert "Upgrade via Stripe" in row
    p = portal().sign_up()
    mine = re.search(r'<tr id="tier-sandbox" class="current">.*?</tr>', p.client.get("/pricing").text, re.S)
    assert mine and "Your plan" in mine.group(0)


def test_auth_errors_show_inline_on_the_same_page(client):
    token = csrf_from(client.get("/signup").text)
    short = client.post("/signup", data={"email": "a@example.com", "password": "short", "csrf_token": token})
    assert short.status_code == 400
    assert 'role="alert"' in short.text and "at least 8 characters" in short.text
    assert 'aria-invalid="true"' in short.text and "<nav" in short.text
    bad = client.post("/login", data={"email": "nobody@example.com", "password": "whatever1", "csrf_token": token})
    assert bad.status_code == 401 and "do not match an account" in bad.text


def _client_from(cx, address: str):
    """The log-in limit counts per client address: each test uses one no other test uses."""
    return TestClient(cx, follow_redirects=False, client=(address, 40000))


def test_login_attempts_are_rate_limited(cx):
    client = _client_from(cx, "198.51.100.11")
    token = csrf_from(client.get("/login").text)
    codes = [
        client.post("/login", data={"email": "x@example.com", "password": "nope", "csrf_token": token}).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [401] * 10
    assert codes[10] == 429


def test_a_rate_limited_log_in_says_so_in_the_form(cx):
    client = _client_from(cx, "198.51.100.12")
    token = csrf_from(client.get("/login").text)
    for _ in range(11):
        refused = client.post("/login", data={"email": "x@example.com", "password": "nope", "csrf_token": token})
    assert refused.status_code == 429 and 0 < int(refused.headers["Retry-After"]) <= 60
    alert = re.search(r'<p id="form-error"[^>]*role="alert">([^<]+)</p>', refused.text).group(1)
    assert alert.startswith("Too many attempts from your network. Try again in ")
    assert "<form" in refused.text and 'aria-invalid="true"' in refused.text  # the form, ready for the next try


def test_a_rate_limited_sign_up_says_so_in_the_form(cx):
    client = _client_from(cx, "198.51.100.13")
    token = csrf_from(client.get("/signup").text)
    for _ in range(21):
        refused = client.post("/signup", data={"email": "not-an-email", "password": "x", "csrf_token": token})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 60
    alert = re.search(r'<p id="form-error"[^>]*role="alert">([^<]+)</p>', refused.text).group(1)
    assert re.fullmatch(r"Too many attempts from your network\. Try again in \d+ minute\(s\)\.", alert)
    assert "Create your developer account" in refused.text


def test_logout_needs_a_post_with_the_csrf_token(portal):
    p = portal().sign_up()
    refused = p.client.post("/logout", data={})
    assert refused.status_code == 400
    assert p.client.get("/developer/api-keys").status_code == 200  # still signed in
    done = p.client.post("/logout", data={"csrf_token": p.csrf})
    assert done.status_code == 302
    assert p.client.get("/developer/api-keys").status_code == 302


# ---- fragments ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["usage", "key-panel", "key-events"])
def test_htmx_gets_the_fragment_it_targets_and_a_browser_the_whole_page(portal, target):
    p = portal().sign_up()
    p.new_key()
    fragment = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": target})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith(f'<section id="{target}"')
    assert "<html" not in fragment.text and "<nav" not in fragment.text
    page = p.client.get("/developer/api-keys")
    assert page.text.startswith("<!doctype html>")
    for part in ("usage", "key-panel", "key-events"):
        assert f'id="{part}"' in page.text
    assert "HX-Request" in page.headers.get("vary", "")


def test_every_fragment_template_has_a_root_element_with_an_id():
    from pathlib import Path

    templates = Path(__file__).resolve().parents[1] / "portal" / "templates"
    fragments = sorted(templates.glob("*/_*.html"))
    assert fragments
    for path in fragments:
        # The first element after Jinja comments, macros and statements is the root htmx swaps.
        text = re.sub(r"\{%-?\s*macro.*?endmacro\s*-?%\}", "", path.read_text(), flags=re.S)
        text = re.sub(r"\{#.*?#\}|\{%.*?%\}", "", text, flags=re.S)
        root = re.search(r"<[a-z][^>]*>", text, re.S).group(0)
        assert re.search(r'\sid="[^"]+"', root), f"{path.name}: {root}"


def test_htmx_request_without_a_known_target_gets_the_whole_page(portal):
    p = portal().sign_up()
    response = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "main"})
    assert response.text.startswith("<!doctype html>")


def test_key_panel_shows_only_the_hint_never_the_key(portal):
    p = portal().sign_up()
    raw = p.new_key().json()["key"]
    html = p.client.get("/developer/api-keys").text
    assert key_format.hint(raw) in html
    assert raw not in html
    assert 'id="key-create"' in html and 'name="grace_period_seconds"' in html
    events = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-events"}).text
    assert "created" in events and p.email in events


def test_key_panel_says_when_the_next_key_can_be_created(portal, app):
    p = portal().sign_up()
    p.new_key()
    html = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text
    assert "The next one is possible after" in html
    # The button says it too, and is off until then.
    assert re.search(
        r'<button type="submit" id="key-create"[^>]* disabled[^>]*>Possible again\s+\d\d \w{3}, \d\d:\d\d UTC', html
    )
    forget_key_creations(app)  # a day later, as far as the key-creation limit knows
    html = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text
    assert "The next one is possible after" not in html
    assert re.search(r'<button type="submit" id="key-create" class="btn btn-primary"[^>]*>Roll key</button>', html)
    assert not re.search(r'id="key-create"[^>]* disabled', html)


def test_the_next_creation_shown_is_the_limiters_window_reset_not_the_audit_trail(portal, app):
    p = portal().sign_up()
    assert p.new_key().status_code == 201
    with app.app_context():
        # The audit trail says "a day ago"; the limiter's window is what decides.
        db.session.query(KeyEvent).update({KeyEvent.at: utcnow() - timedelta(days=1, minutes=1)})
        db.session.commit()
    html = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text
    shown = datetime.fromisoformat(re.search(r'possible after\s+<time datetime="([^"]+)"', html).group(1))
    r = app.extensions["levqor.redis"]
    (counter,) = r.keys(f"LIMITS:LIMITER/{app.config['RATELIMIT_KEY_PREFIX']}/key-new:*")
    window_reset = utcnow() + timedelta(seconds=r.ttl(counter))
    assert abs((shown - window_reset).total_seconds()) <= 2
    refused = p.new_key()  # and the limit refuses until that very moment
    assert refused.status_code == 429
    assert abs((utcnow() + timedelta(seconds=int(refused.headers["retry-after"])) - shown).total_seconds()) <= 2


def test_rolling_twice_the_same_day_is_refused_with_retry_after(portal):
    p = portal().sign_up()
    assert p.new_key().status_code == 201
    again = p.client.post(
        "/api/key/new", data={"grace_period_seconds": "3600"}, headers={"X-CSRFToken": p.csrf}
    )  # form-encoded, as the portal's htmx form sends it
    assert again.status_code == 429
    assert 0 < int(again.headers["retry-after"]) <= 86400


def test_rolling_with_a_grace_period_from_the_form_lists_the_old_key_until_it_expires(portal, app):
    p = portal().sign_up()
    first = p.client.post("/api/key/new", data={"grace_period_seconds": "0"}, headers={"X-CSRFToken": p.csrf})
    assert first.status_code == 201, first.text
    forget_key_creations(app)  # a day later, as far as the key-creation limit knows
    second = p.client.post("/api/key/new", data={"grace_period_seconds": "3600"}, headers={"X-CSRFToken": p.csrf})
    assert second.status_code == 201, second.text
    panel = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text
    assert f'id="key-hint">{second.json()["hint"]}<' in panel
    assert f"Previous key <code>{first.json()['hint']}</code> keeps working until" in panel


# ---- key actions on the portal: the panel answers with itself ------------------------------------


def test_portal_create_answers_with_the_panel_showing_the_key_once_and_signals_the_other_fragments(portal, app):
    p = portal().sign_up()
    created = portal_key_action(p, "new", grace_period_seconds="0")
    assert created.status_code == 200
    assert created.headers["hx-trigger"] == "key-changed"
    assert created.headers["cache-control"] == "no-store"
    fragment = created.text
    assert fragment.lstrip().startswith('<section id="key-panel"') and "<html" not in fragment
    raw = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', fragment).group(1)
    assert key_format.is_well_formed(raw)
    assert f'id="key-hint">{key_format.hint(raw)}<' in fragment
    assert "shown only this once" in fragment
    assert re.search(r'id="key-create"[^>]* disabled', fragment)  # the daily creation is spent
    # Shown once: the panel asked for again (or the page) holds only the hint.
    again = p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "key-panel"}).text
    page = p.client.get("/developer/api-keys").text
    assert raw not in again and raw not in page and key_format.hint(raw) in again
    # The key works, and the audit trail has the portal's event.
    assert p.client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
    events = p.client.get("/api/key/events").json()["data"]
    assert [(e["event"], e["actor"]) for e in events] == [("created", p.email)]
    # The fragments that show the key's state listen for the event.
    assert 'hx-trigger="every 5s, usage-changed from:body, key-changed from:body"' in page
    assert 'hx-trigger="key-changed from:body"' in page


def test_portal_roll_with_a_grace_period_then_revoke(portal, app):
    p = portal().sign_up()
    created = portal_key_action(p, "new", grace_period_seconds="0")
    first = re.search(r'id="new-key"[^>]*>([^<]+)<', created.text).group(1)
    forget_key_creations(app)
    rolled = portal_key_action(p, "new", grace_period_seconds="3600")
    assert rolled.status_code == 200 and rolled.headers["hx-trigger"] == "key-changed"
    second = re.search(r'id="new-key"[^>]*>([^<]+)<', rolled.text).group(1)
    assert second != first
    assert f"Previous key <code>{key_format.hint(first)}</code> keeps working until" in rolled.text
    revoked = portal_key_action(p, "revoke")
    assert revoked.status_code == 200 and revoked.headers["hx-trigger"] == "key-changed"
    assert f"Key {key_format.hint(second)} is revoked" in revoked.text
    assert 'id="no-key"' in revoked.text and 'id="new-key"' not in revoked.text
    for raw in (first, second):
        assert p.client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 401
    events = [(e["event"], e["key_id"][:4]) for e in p.client.get("/api/key/events").json()["data"]]
    assert [e for e, _ in events] == ["revoked", "revoked", "rolled", "created"]
    nothing = portal_key_action(p, "revoke")
    assert nothing.status_code == 200 and "has no active key" in nothing.text
    assert portal_key_action(p, "revoke", htmx=False).status_code == 404


def test_portal_refuses_a_grace_period_the_form_does_not_offer(portal):
    p = portal().sign_up()
    refused = portal_key_action(p, "new", htmx=False, grace_period_seconds="999999")
    assert refused.status_code == 400 and "Choose how long the old key keeps working" in refused.text
    assert 'id="no-key"' in refused.text


def test_without_javascript_the_key_form_posts_and_gets_the_whole_page(portal):
    p = portal().sign_up()
    page = portal_key_action(p, "new", htmx=False, grace_period_seconds="0")
    assert page.status_code == 201 and page.text.startswith("<!doctype html>")
    assert re.search(r'<code id="new-key"[^>]*>lvq_', page.text)
    assert 'id="usage"' in page.text and 'id="key-events"' in page.text


def test_the_daily_key_creation_limit_is_one_limit_for_the_portal_and_the_api(portal, app):
    api_first = portal().sign_up()
    assert api_first.new_key().status_code == 201
    refused = portal_key_action(api_first, "new", grace_period_seconds="0")
    assert refused.status_code == 200  # htmx swaps only 2xx: the refusal shows in the panel
    assert 'id="new-key"' not in refused.text and 'id="key-hint"' in refused.text  # the key made elsewhere
    assert refused.headers["hx-trigger"] == "key-changed"  # so this tab's audit trail shows it too
    assert "You can create or roll a key once a day. You can roll your key again at" in refused.text
    without_js = portal_key_action(api_first, "new", htmx=False, grace_period_seconds="0")
    assert without_js.status_code == 429 and 0 < int(without_js.headers["retry-after"]) <= 86400

    portal_first = portal().sign_up()
    assert 'id="new-key"' in portal_key_action(portal_first, "new", grace_period_seconds="0").text
    again = portal_first.new_key()
    assert again.status_code == 429 and again.json()["type"].endswith("/key-creation-limited")
    with app.app_context():
        for dev in (api_first, portal_first):  # one key each: every refusal created nothing
            assert db.session.query(KeyEvent).filter_by(account_id=account_id_of(app, dev.email)).count() == 1


def test_portal_key_actions_need_the_csrf_token_and_a_session(portal, client):
    p = portal().sign_up()
    for action in ("new", "revoke"):
        forged = p.client.post(f"/developer/api-keys/{action}", data={}, headers={**HX, "X-CSRFToken": "forged"})
        assert forged.status_code == 400 and "This form has expired" in forged.text
    assert 'id="no-key"' in p.client.get("/developer/api-keys").text
    token = csrf_from(client.get("/login").text)
    anonymous = client.post("/developer/api-keys/new", data={"csrf_token": token})
    assert anonymous.status_code == 302 and anonymous.headers["location"].startswith("/login?next=")


def test_the_usage_poll_renders_only_the_usage_card_and_writes_nothing(portal, app):
    from sqlalchemy import event

    p = portal().sign_up()
    portal_key_action(p, "new", grace_period_seconds="0")
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement.lstrip().split(None, 1)[0].upper())

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        polled = p.client.get(
            "/developer/api-keys/usage",
            headers={**HX, "HX-Target": "usage", "HX-Current-URL": "http://testserver/developer/api-keys"},
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert polled.status_code == 200
    assert polled.text.lstrip().startswith('<section id="usage"') and polled.text.count("<section") == 1
    assert 'id="sandbox-today">0<' in polled.text
    assert "SELECT" in statements
    assert not {"UPDATE", "INSERT", "DELETE"} & set(statements), statements
    # A browser that opens the poll's address gets the page it belongs to.
    assert p.client.get("/developer/api-keys/usage").headers["location"] == "/developer/api-keys"


@pytest.mark.parametrize(
    ("method", "path", "back"),
    [
        ("GET", "/developer/api-keys/usage", "/developer/api-keys"),
        ("GET", "/developer/api-keys", "/developer/api-keys"),
        ("POST", "/developer/api-keys/new", "/developer/api-keys"),
        ("GET", "/developer/ops", "/developer/ops"),
        ("GET", "/developer/ops/status", "/developer/ops"),
        ("GET", "/developer/billing", "/developer/billing"),
    ],
)
def test_htmx_with_an_ended_session_is_sent_to_log_in_not_given_the_login_page(cx, portal, method, path, back):
    p = portal().sign_up()
    p.client.post("/logout", data={"csrf_token": p.csrf})
    token = csrf_from(p.client.get("/login").text)
    headers = {**HX, "HX-Current-URL": f"http://testserver{back}", "X-CSRFToken": token}
    response = p.client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == f"/login?next={back}"
    assert response.text == ""
    plain = p.client.request(method, path, headers={"X-CSRFToken": token})
    assert plain.status_code == 302 and plain.headers["location"].startswith("/login?next=")


# ---- sandbox runs from /docs/sdk ------------------------------------------------------------------


def test_run_calls_the_sandbox_as_the_developer_and_counts_it(portal):
    p = portal().sign_up()
    p.new_key()
    before = sandbox_today(p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "usage"}).text)
    run = run_example(p)
    assert run.status_code == 200
    assert run.headers["hx-trigger"] == "usage-changed"
    assert "202" in run.text and "succeeded" in run.text and "text-stats" in run.text
    assert "<html" not in run.text
    assert re.search(r'class="sandbox-remaining">99<', run.text)
    after = sandbox_today(p.client.get("/developer/api-keys", headers={**HX, "HX-Target": "usage"}).text)
    assert after == before + 1
    # The job is really in this account's sandbox.
    listed = run_example(p, "list-jobs").text
    assert "text-stats" in listed


def test_run_without_javascript_renders_the_whole_page_with_the_result(portal):
    p = portal().sign_up()
    p.new_key()
    page = run_example(p, "list-workflows", htmx=False)
    assert page.status_code == 200
    assert page.text.startswith("<!doctype html>") and "text-stats" in page.text and "run-ok" in page.text


def test_run_without_a_key_or_session_explains_inline(client, portal):
    p = portal().sign_up()
    no_key = run_example(p)
    assert no_key.status_code == 200 and "No active API key" in no_key.text and 'role="alert"' in no_key.text
    token = csrf_from(client.get("/docs/sdk").text)
    anonymous = client.post("/docs/sdk/run", data={"example": "submit-job"}, headers={**HX, "X-CSRFToken": token})
    assert "Log in to run" in anonymous.text
    unknown = run_example(p, "no-such-example")
    assert "no such example" in unknown.text


def test_run_shows_the_sandbox_daily_cap_inline(portal, app):
    p = portal().sign_up()
    p.new_key()
    with app.app_context():
        key = keys.active_key(db.session.query(keys.Account).one().id)
    r = app.extensions["levqor.redis"]
    from levqor_core.metering import counters as metering

    run_example(p)  # seeds the counters
    r.set(metering.sandbox_key(key.account_id, key.id, utcnow().date()), tiers.SANDBOX_DAILY_LIMIT)
    capped = run_example(p)
    assert "Sandbox daily cap exceeded" in capped.text
    assert "Try again in" in capped.text


# ---- CSRF ------------------------------------------------------------------------------------------


def test_state_changes_without_the_csrf_token_are_refused(portal):
    p = portal().sign_up()
    no_token_key = p.client.post("/api/key/new", json={})
    assert no_token_key.status_code == 403
    assert no_token_key.json()["type"].endswith("csrf-failed")
    assert p.client.get("/developer/api-keys").text.count("Roll key") == 0  # nothing was created
    p.new_key()
    assert p.client.delete("/api/key").status_code == 403
    assert p.client.delete("/api/key", headers={"X-CSRFToken": "forged"}).status_code == 403
    run = p.client.post("/docs/sdk/run", data={"example": "submit-job"}, headers=HX)
    assert run.status_code == 400 and "security token" in run.text
    assert sandbox_today(p.client.get("/developer/api-keys").text) == 0


def test_another_sessions_csrf_token_does_not_work(portal):
    a, b = portal().sign_up(), portal().sign_up()
    stolen = a.client.post("/api/key/new", json={}, headers={"X-CSRFToken": b.csrf})
    assert stolen.status_code == 403


# ---- isolation -------------------------------------------------------------------------------------


def test_one_account_never_sees_another_accounts_key_usage_or_events(portal):
    a, b = portal().sign_up(), portal().sign_up()
    raw_a = a.new_key().json()["key"]
    for _ in range(3):
        run_example(a)
    b.new_key()
    page_b = b.client.get("/developer/api-keys").text
    assert key_format.hint(raw_a) not in page_b and a.email not in page_b
    assert sandbox_today(page_b) == 0
    assert sandbox_today(a.client.get("/developer/api-keys").text) == 3
    # B's runs see B's sandbox only: A's jobs are not listed.
    listing_b = run_example(b, "list-jobs").text
    assert "&#34;data&#34;: []" in listing_b
    assert "text-stats" in run_example(a, "list-jobs").text


# ---- security headers, cookies, assets -----------------------------------------------------------------


def test_portal_pages_carry_a_strict_csp_and_no_inline_script(client):
    for path in ("/developer", "/docs/api", "/docs/sdk", "/pricing", "/login", "/signup"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        for script in re.findall(r"<script[^>]*>(.*?)</script>", response.text, re.S):
            assert script.strip() == "", f"inline script on {path}"
        assert " on" not in "".join(re.findall(r"<[^>]+ on[a-z]+=", response.text))
        assert "style=" not in response.text


def test_session_cookie_is_httponly_and_samesite(client):
    token = csrf_from(client.get("/signup").text)
    response = client.post(
        "/signup", data={"email": "c@example.com", "password": "long enough pw", "csrf_token": token}
    )
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_pinned_npm_assets_are_served_by_the_app(client):
    htmx = client.get("/vendor/htmx.min.js")
    assert htmx.status_code == 200 and "htmx" in htmx.text[:2000]
    assert htmx.headers["content-type"].startswith("text/javascript")
    # Only what a page loads: Swagger UI's 1.7 MB bundle went with the reference it served.
    assert client.get("/vendor/swagger-ui-bundle.js").status_code == 404
    assert client.get("/vendor/package.json").status_code == 404
    assert client.get("/vendor/..%2Fpackage.json").status_code == 404
    assert client.get("/assets/portal.js").status_code == 200


# ---- docs generated from the spec ------------------------------------------------------------------------


def test_api_docs_render_the_reference_and_examples_for_every_public_operation(client):
    html = client.get("/docs/api").text
    assert "/assets/docs-api.js" in html and "swagger-ui" not in html
    for example in snippets.examples("http://testserver/"):
        internal = example.operation_id in (
            "create_key",
            "create_checkout_session",
            "create_portal_session",
            "stripe_webhook",
            "github_secret_scanning_report",
        )
        assert (f'id="op-{example.operation_id}"' in html) is not internal
    assert html.count('id="code-sandbox_create_job-python"') == 1


def test_snippets_are_generated_from_the_spec(tmp_path):
    spec = {
        "servers": [{"url": "/api"}],
        "security": [{"ApiKeyAuth": []}],
        "paths": {
            "/things/{thing_id}": {
                "post": {
                    "operationId": "poke_thing",
                    "parameters": [
                        {
                            "name": "thing_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "example": "t1"},
                        },
                        {"name": "dry", "in": "query", "required": True, "schema": {"type": "boolean"}},
                    ],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["n"],
                                    "properties": {"n": {"type": "integer"}},
                                }
                            }
                        }
                    },
                }
            }
        },
    }
    (example,) = snippets.examples("https://api.example.com", spec)
    assert example.url == "https://api.example.com/api/things/t1?dry=True"
    assert example.body == {"n": 1}
    assert "-d '{\"n\": 1}'" in example.curl and "x-api-key: $LEVQOR_API_KEY" in example.curl
    assert "requests.post(" in example.python and "json={'n': 1}" in example.python
    assert 'method: "POST"' in example.node and "JSON.stringify" in example.node
    compile(example.python, "example.py", "exec")


def test_every_generated_python_example_compiles():
    for example in snippets.examples("http://127.0.0.1:5000"):
        compile(example.python, example.operation_id, "exec")


def test_sdk_page_documents_both_sdks_with_run_buttons(client, portal, app):
    html = client.get("/docs/sdk").text
    assert "pip install levqor" in html and "npm install @levqor/sdk" in html
    assert "Log in</a> to run these examples" in html and "disabled" in html
    p = portal().sign_up()
    signed_in = p.client.get("/docs/sdk").text
    assert signed_in.count('hx-post="/docs/sdk/run"') == 6
    base_url = app.config["PUBLIC_BASE_URL"]  # pinned, not the request's Host
    assert f"base_url=&#34;{base_url}/api&#34;," in signed_in and "environment=&#34;sandbox&#34;" in signed_in


def test_sdk_python_examples_compile():
    for item in sdk_examples.rendered("http://127.0.0.1:5000/api"):
        compile(item["python"], item["example"].id, "exec")
        assert item["example"].operation_id in portal_sandbox.OPERATIONS


# ---- chart geometry ---------------------------------------------------------------------------------


def test_daily_chart_scales_bars_to_a_round_maximum():
    history = [{"day": f"2026-11-{d:02d}", "calls": d, "sandbox_calls": 1 if d == 3 else 0} for d in range(1, 4)]
    chart = charts.daily_chart(history)
    assert chart.scale_max == 4
    tallest = chart.bars[2]
    full = chart.plot_bottom - chart.plot_top
    assert tallest.calls_h == pytest.approx(full * 3 / 4, abs=0.01)
    assert tallest.sandbox_y == pytest.approx(chart.plot_top, abs=0.01)  # 3 + 1 fills the scale
    assert [value for _, value in chart.gridlines] == [0, 2, 4]
    assert [b.x for b in chart.bars] == sorted(b.x for b in chart.bars)
    assert charts.daily_chart([{"day": "2026-11-01", "calls": 0, "sandbox_calls": 0}]).scale_max == 4
    assert charts.daily_chart([{"day": "2026-11-01", "calls": 130, "sandbox_calls": 0}]).scale_max == 200


def test_an_expired_session_sends_htmx_to_the_login_page_instead_of_a_fragment(client):
    response = client.get(
        "/developer/api-keys",
        headers={**HX, "HX-Target": "usage", "HX-Current-URL": "http://testserver/developer/api-keys"},
    )
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login?next=/developer/api-keys"
    assert response.text == ""


def test_unknown_portal_pages_are_404_not_500(client):
    page = client.get("/developer/nothing-here")
    assert page.status_code == 404
    assert "Page not found" in page.text and "<nav" in page.text
    api = client.get("/api/nothing-here")
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    assert api.json()["type"].endswith("/not-found")
    assert client.get("/docs").status_code == 200


def test_with_redis_down_the_dashboard_and_run_degrade_instead_of_failing(portal, redis_server):
    p = portal().sign_up()
    p.new_key()
    redis_server.stop()
    try:
        page = p.client.get("/developer/api-keys")
        assert page.status_code == 200
        assert 'id="usage-unavailable"' in page.text and 'id="key-hint"' in page.text
        run = run_example(p)
        assert run.status_code == 200 and "unavailable" in run.text and 'role="alert"' in run.text
    finally:
        redis_server.start()
    back = p.client.get("/developer/api-keys")
    assert back.status_code == 200 and 'id="usage-unavailable"' not in back.text


@pytest.mark.parametrize("target", ["//evil.example/", "/\\evil.example", "https://evil.example/", "/%0d/x\r\n"])
def test_login_never_redirects_off_site(cx, target):
    dev = Portal(cx).sign_up()
    dev.client.post("/logout", data={"csrf_token": dev.csrf})
    token = csrf_from(dev.client.get("/login").text)
    response = dev.client.post(
        "/login", params={"next": target}, data={"email": dev.email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302
    assert response.headers["location"] == "/developer"


def test_login_keeps_a_same_site_next(cx):
    dev = Portal(cx).sign_up()
    dev.client.post("/logout", data={"csrf_token": dev.csrf})
    token = csrf_from(dev.client.get("/login").text)
    response = dev.client.post(
        "/login", params={"next": "/docs/sdk"}, data={"email": dev.email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.headers["location"] == "/docs/sdk"


def test_switching_between_log_in_and_sign_up_keeps_where_the_visitor_was_going(cx):
    visitor = cx.test_client(follow_redirects=False)
    login_page = visitor.get("/login", params={"next": "/billing/upgrade?tier=pro"}).text
    signup_href = re.search(r'New to Levqor\? <a href="([^"]+)">', login_page).group(1)
    assert html.unescape(signup_href) == "/signup?next=/billing/upgrade?tier%3Dpro"

    signup_page = visitor.get(html.unescape(signup_href))
    back_href = re.search(r'Already have an account\? <a href="([^"]+)">', signup_page.text).group(1)
    assert html.unescape(back_href) == "/login?next=/billing/upgrade?tier%3Dpro"
    token = csrf_from(signup_page.text)
    email = f"dev-{uuid.uuid4().hex[:8]}@example.com"
    signed_up = visitor.post(
        html.unescape(signup_href), data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    # Not signed in yet (the same page whether or not the address had an account): its log-in link
    # keeps the destination.
    assert signed_up.status_code == 302
    check_email = visitor.get(signed_up.headers["location"]).text
    login_href = re.search(r'<a href="([^"]+)" id="check-email-login">', check_email).group(1)
    assert html.unescape(login_href) == "/login?next=/billing/upgrade?tier%3Dpro"
