"""Every portal page, in each state a developer meets it, has no serious or critical axe-core violation.

One test per page state: each is reached the way a browser reaches it (forms, mailed links, buttons
that open dialogs), then axe runs on the page as shown (tests/browser/axe.py)."""

import re
import secrets
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
import pyotp
import pytest
import sqlalchemy as sa
from itsdangerous import TimestampSigner
from playwright.sync_api import expect

from levqor_core.accounts import service as accounts
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.requestlog.models import RequestLogEntry

from ..conftest import PASSWORD
from ..helpers import fresh_code
from ..webhook_helpers import hook_fixture, private_targets_fixture  # noqa: F401 (fixtures)
from .axe import assert_accessible
from .journeys import sign_up


def mailed_link(smtp, email: str, kind: str) -> str:
    """The path of the newest `kind` link (confirm, reset) mailed to `email`."""
    text = smtp.to(email)[-1].get_body(("plain",)).get_content()
    return urlsplit(re.search(rf"https?://\S+/{kind}/\S+", text).group(0)).path


def signed_up_only(page, email="pending@example.com"):
    page.goto("/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    return email


def log_in(page, email, password=PASSWORD):
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def with_key(page, smtp):
    email = sign_up(page, smtp)
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible()
    return email, page.locator("#new-key").inner_text().strip()


def enrol_two_factor(page) -> pyotp.TOTP:
    page.goto("/developer/account/two-factor")
    page.get_by_role("button", name="Continue").click()
    totp = pyotp.TOTP(page.locator("#totp-key").inner_text().replace("-", ""))
    page.get_by_label("The 6-digit code your app now shows").fill(fresh_code(totp))
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page).to_have_url(re.compile(r"/developer/account$"))
    return totp


def reference_ready(page):
    expect(page.locator("#op-create_job")).to_be_visible()


# -- the states: each takes (page, ctx) and leaves the page showing what axe should check ----------------


def visit(path, then=None):
    def go(page, ctx):
        page.goto(path)
        if then:
            then(page)

    return go


def login_refused(page, ctx):
    log_in(page, "nobody@example.com", "wrong password")
    expect(page.get_by_role("alert")).to_be_visible()


def signup_refused(page, ctx):
    page.goto("/signup")
    page.get_by_label("Email").fill("weak@example.com")
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_be_visible()


def check_email(page, ctx):
    signed_up_only(page)


def forgot_password_sent(page, ctx):
    page.goto("/reset")
    page.get_by_label("Email").fill("nobody@example.com")
    page.get_by_role("button", name="Email me a link").click()


def reset_password_page(page, ctx):
    email = sign_up(page, ctx.smtp)
    page.context.clear_cookies()
    forgot_password_sent_to(page, email)
    page.goto(mailed_link(ctx.smtp, email, "reset"))
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def forgot_password_sent_to(page, email):
    page.goto("/reset")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Email me a link").click()


def reset_link_invalid(page, ctx):
    page.goto("/reset/not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("not valid")


def confirm_link_expired(page, ctx):
    email = signed_up_only(page, "late@example.com")
    real = TimestampSigner.get_timestamp
    ctx.monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 24 * 3600 + 5)
    page.goto(mailed_link(ctx.smtp, email, "confirm"))
    expect(page.get_by_role("alert")).to_contain_text("has expired")


def confirm_link_used_again(page, ctx):
    email = signed_up_only(page, "twice@example.com")
    link = mailed_link(ctx.smtp, email, "confirm")
    page.goto(link)
    page.goto(link)
    expect(page.locator("main")).to_contain_text("already been confirmed")


def confirm_resent(page, ctx):
    email = signed_up_only(page, "resend@example.com")
    page.goto("/confirm")
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status")).to_contain_text(f"sent to {email}")


def reset_password_refused(page, ctx):
    reset_password_page(page, ctx)
    page.get_by_label("Password", exact=True).fill("password")
    page.get_by_label("Retype Password").fill("password")
    page.get_by_role("button", name="Save the new password").click()
    expect(page.get_by_role("alert")).to_contain_text("common password")


def _spend_the_limit(page, path: str, times: int, fields: dict):
    """Posts the form `times` times from this browser's address (127.0.0.1), spending its per-address
    limit. The counts are in Redis, which every test starts empty (tests/conftest.py): no other test meets it."""
    page.goto(path)
    token = page.locator('input[name="csrf_token"]').first.input_value()
    for _ in range(times):
        page.request.post(path, form={**fields, "csrf_token": token}, max_redirects=0)


def login_rate_limited(page, ctx):
    _spend_the_limit(page, "/login", 10, {"email": "nobody@example.com", "password": "wrong password"})
    log_in(page, "nobody@example.com", "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("Too many attempts")


def signup_rate_limited(page, ctx):
    _spend_the_limit(page, "/signup", 20, {"email": "not-an-email", "password": "x"})
    page.goto("/signup")
    page.get_by_label("Email").fill("late@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("alert")).to_contain_text("Too many attempts")


def developer(path, then=None):
    def go(page, ctx):
        sign_up(page, ctx.smtp)
        page.goto(path)
        if then:
            then(page)

    return go


def api_keys_unconfirmed(page, ctx):
    email = signed_up_only(page)
    log_in(page, email)
    page.goto("/developer/api-keys")
    expect(page.locator("#key-panel")).to_contain_text("Resend")


def api_keys_new_key(page, ctx):
    with_key(page, ctx.smtp)


def api_keys_active_key(page, ctx):
    with_key(page, ctx.smtp)
    page.get_by_role("link", name="I have saved it").click()
    # The panel is swapped for one without the key: a button clicked before that would be gone with
    # it (under load the swap can come after #key-hint is already visible).
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator("#key-hint")).to_be_visible()


def api_keys_revoke_dialog(page, ctx):
    api_keys_active_key(page, ctx)
    page.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("dialog")).to_be_visible()


def api_keys_roll_dialog(page, ctx):
    api_keys_active_key(page, ctx)
    r = ctx.app.extensions["levqor.redis"]  # a day later, as far as the key-creation limit knows
    r.delete(*r.keys(f"LIMITS:LIMITER/{ctx.app.config['RATELIMIT_KEY_PREFIX']}/key-new:*"))
    page.reload()
    page.get_by_role("button", name="Roll key").click()
    expect(page.get_by_role("dialog", name=re.compile(r"^Roll key lvq_"))).to_be_visible()


def api_keys_revoked(page, ctx):
    api_keys_revoke_dialog(page, ctx)
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(page.locator("#key-notice")).to_contain_text("is revoked")


def api_keys_limit_spent(page, ctx):
    api_keys_revoked(page, ctx)
    page.reload()
    expect(page.locator("#key-replace")).to_be_visible()  # the day's creation is spent


def key_replace_form(page, ctx):
    api_keys_limit_spent(page, ctx)
    page.locator("#key-replace").click()  # signed in moments ago: no re-authentication
    expect(page.locator("#replace-confirm")).to_be_visible()


def key_replaced(page, ctx):
    api_keys_active_key(page, ctx)
    page.goto("/developer/api-keys/replace")
    page.locator("#replace-confirm").click()
    expect(page.locator("#new-key")).to_be_visible()


def key_replace_refused_today(page, ctx):
    api_keys_active_key(page, ctx)
    page.goto("/developer/api-keys/replace")
    # A second tab replaces the key first: this one's button then meets the once-a-day limit.
    other = page.context.new_page()
    other.goto("/developer/api-keys/replace")
    other.locator("#replace-confirm").click()
    expect(other.locator("#new-key")).to_be_visible()
    other.close()
    page.locator("#replace-confirm").click()
    expect(page.locator("#replace-notice")).to_contain_text("already replaced a key in an emergency today")


def account_email_link_sent(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/account/email")
    page.get_by_label("Email").fill("new-address@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("status")).to_contain_text("sent to new-address@example.com")


def account_email_link_invalid(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/account/email/not-a-token")  # lands back on the form, the refusal flashed
    expect(page).to_have_url(re.compile(r"/developer/account/email$"))
    expect(page.get_by_role("alert")).to_be_visible()


def _change_password(page, ctx, current: str, new: str) -> None:
    sign_up(page, ctx.smtp)
    page.goto("/developer/account/password")
    page.get_by_label("Password", exact=True).fill(current)
    page.get_by_label("New Password", exact=True).fill(new)
    page.get_by_label("Retype Password").fill(new)
    page.get_by_role("button", name="Change password").click()


def account_password_wrong(page, ctx):
    _change_password(page, ctx, "not my password", "a much longer new passphrase")
    expect(page.get_by_role("alert")).to_contain_text("Invalid password")


def account_password_weak(page, ctx):
    _change_password(page, ctx, PASSWORD, "password")
    expect(page.get_by_role("alert")).to_contain_text("common password")


def account_verify_wrong_password(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/account/verify")
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid password")


def account_verify_two_factor(page, ctx):
    sign_up(page, ctx.smtp)
    enrol_two_factor(page)
    page.goto("/developer/account/verify")
    expect(page.locator("main")).to_contain_text("code")


def docs_api_signed_in_operation_open(page, ctx):
    _, key = with_key(page, ctx.smtp)
    page.goto("/docs/api#op-list_workflows&")  # a "Try this again" address opens its try-it
    page.get_by_label("Your API key").fill(key)
    page.get_by_role("button", name="Use this key").click()
    operation = page.locator("#op-list_workflows")
    operation.get_by_role("button", name="Send to the sandbox").click()
    expect(operation.locator(".try-output .status")).to_have_text("200")


def docs_sdk_run_result(page, ctx):
    with_key(page, ctx.smtp)
    page.goto("/docs/sdk")
    page.get_by_role("button", name="Run Python example").first.click()
    expect(page.locator("#run-submit-job-python .run-result")).to_be_visible()


def _failed_call(page, ctx) -> str:
    _, key = with_key(page, ctx.smtp)
    with httpx.Client(base_url=ctx.live_server, headers={"x-api-key": key}) as api:
        failed = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293")
    assert failed.status_code == 404
    request_id = failed.headers["Request-Id"]
    # The server records the call after answering it: flush until it is in the log.
    deadline = time.monotonic() + 10
    with ctx.app.app_context():
        while not db.session.scalar(sa.select(RequestLogEntry.id).where(RequestLogEntry.request_id == request_id)):
            assert time.monotonic() < deadline, f"{request_id} never reached the request log"
            ctx.app.extensions["levqor.request_log"].flush()
            db.session.rollback()
            time.sleep(0.05)
    return request_id


def logs_with_calls(page, ctx):
    _failed_call(page, ctx)
    page.goto("/developer/logs")
    expect(page.locator("#request-log tbody tr").first).to_be_visible()


def logs_detail_open(page, ctx):
    request_id = _failed_call(page, ctx)
    page.goto("/developer/logs")
    page.get_by_role("link", name=request_id).click()
    expect(page.locator("#log-detail")).to_contain_text("Problem returned")


def log_entry_page(page, ctx):
    request_id = _failed_call(page, ctx)
    page.goto(f"/developer/logs/{request_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(request_id)


def webhooks_refused(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/webhooks")
    page.get_by_label("Endpoint URL").fill("https://127.0.0.1/hook")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#webhook-error")).to_be_visible()


def webhooks_endpoint_delete_dialog(page, ctx):
    hook = ctx.request.getfixturevalue("hook")
    sign_up(page, ctx.smtp)
    page.goto("/developer/webhooks")
    page.get_by_label("Endpoint URL").fill(hook.url())
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#new-webhook-secret")).to_be_visible()
    page.get_by_role("button", name=f"Send test event to {hook.url()}").click()
    expect(page.locator(".webhook-endpoint tbody tr")).to_have_count(1)
    page.get_by_role("button", name=f"Delete endpoint {hook.url()}").click()
    expect(page.get_by_role("dialog")).to_be_visible()


def account_delete_refused(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/account")
    page.get_by_label("Your password").fill("not my password")
    page.get_by_role("button", name="Delete my account").click()
    expect(page.locator("#delete-error")).to_be_visible()


def two_factor_choose(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/account/two-factor")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#totp-key")).to_be_visible()


def two_factor_wrong_setup_code(page, ctx):
    two_factor_choose(page, ctx)
    page.get_by_label("The 6-digit code your app now shows").fill("000000")
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    expect(page.get_by_role("alert")).to_be_visible()


def two_factor_on(page, ctx):
    sign_up(page, ctx.smtp)
    enrol_two_factor(page)
    page.goto("/developer/account/two-factor")


def recovery_codes_shown(page, ctx):
    sign_up(page, ctx.smtp)
    enrol_two_factor(page)
    page.goto("/developer/account/recovery-codes")
    page.get_by_role("button", name="Make new recovery codes").click()
    expect(page.locator("#recovery-codes li")).to_have_count(5)


def _second_step(page, ctx):
    email = sign_up(page, ctx.smtp)
    enrol_two_factor(page)
    page.context.clear_cookies()
    log_in(page, email)
    expect(page).to_have_url(re.compile(r"/tf-validate"))


def tf_validate(page, ctx):
    _second_step(page, ctx)


def tf_validate_wrong_code(page, ctx):
    _second_step(page, ctx)
    page.get_by_label("Code from your app").fill("000000")
    page.get_by_role("button", name="Verify code").click()
    expect(page.get_by_role("alert")).to_be_visible()


def mf_recovery(page, ctx):
    _second_step(page, ctx)
    page.get_by_role("link", name="Use a recovery code").click()
    expect(page.get_by_label("Recovery code")).to_be_visible()


def mf_recovery_wrong_code(page, ctx):
    mf_recovery(page, ctx)
    page.get_by_label("Recovery code").fill("not-a-code")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid")


def signed_out_everywhere(page, ctx):
    sign_up(page, ctx.smtp)
    page.goto("/developer/account")
    page.get_by_role("button", name="Sign out everywhere").click()
    expect(page.get_by_role("status")).to_contain_text("signed out everywhere")


def billing_as(subscription_status: str):
    """The billing page of a Pro account whose Stripe subscription is in `subscription_status`
    (the columns the billing webhook writes, set directly: tests/test_billing.py drives the webhook)."""

    def go(page, ctx):
        email = sign_up(page, ctx.smtp)
        with ctx.app.app_context():
            account = accounts.by_email(email)
            account.tier, account.stripe_customer_id = "pro", "cus_" + secrets.token_hex(8)
            account.stripe_subscription_id = "sub_" + secrets.token_hex(8)
            account.subscription_status = subscription_status
            account.period_start = utcnow()
            account.period_end = utcnow() + timedelta(days=30)
            db.session.commit()
        page.goto("/developer/billing")
        expect(page.locator("#plan-name")).to_have_text("Pro")
        expect(page.locator("#payment-problem")).to_have_count(0 if subscription_status == "active" else 1)

    return go


def operator(path):
    def go(page, ctx):
        email = sign_up(page, ctx.smtp)
        with ctx.app.app_context():
            accounts.grant_role(accounts.by_email(email), "ops")
            db.session.commit()
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()

    return go


PAGES = {
    # Visitors
    "home": visit("/"),
    "developer": visit("/developer"),
    "pricing": visit("/pricing"),
    "docs-api": visit("/docs/api", reference_ready),
    "docs-home": visit("/docs"),
    "status": visit("/status"),
    "docs-getting-started": visit("/docs/getting-started"),
    "docs-guide-errors": visit("/docs/guides/errors"),
    "docs-guide-pagination": visit("/docs/guides/pagination"),
    "docs-guide-idempotency": visit("/docs/guides/idempotency"),
    "docs-guide-webhooks": visit("/docs/guides/webhooks"),
    "docs-guide-rate-limits": visit("/docs/guides/rate-limits"),
    "docs-sdk": visit("/docs/sdk"),
    "docs-changelog": visit("/docs/changelog"),
    "docs-search": visit("/docs/search?q=webhooks"),
    "docs-search-none": visit("/docs/search?q=zebra"),
    "docs-search-too-long": visit("/docs/search?q=" + "x" * 201),
    "login": visit("/login"),
    "login-refused": login_refused,
    "login-rate-limited": login_rate_limited,
    "signup": visit("/signup"),
    "signup-refused": signup_refused,
    "signup-rate-limited": signup_rate_limited,
    "signup-check-email": check_email,
    "forgot-password": visit("/reset"),
    "forgot-password-sent": forgot_password_sent,
    "reset-password": reset_password_page,
    "reset-password-refused": reset_password_refused,
    "reset-link-invalid": reset_link_invalid,
    "confirm-resend": visit("/confirm"),
    "confirm-resent": confirm_resent,
    "confirm-link-expired": confirm_link_expired,
    "confirm-link-used-again": confirm_link_used_again,
    "not-found": visit("/no-such-page"),
    # Signed in
    "developer-signed-in": developer("/developer"),
    "usage": developer("/developer/usage"),
    "api-keys-unconfirmed": api_keys_unconfirmed,
    "api-keys-no-key": developer("/developer/api-keys"),
    "api-keys-new-key": api_keys_new_key,
    "api-keys-active-key": api_keys_active_key,
    "api-keys-revoke-dialog": api_keys_revoke_dialog,
    "api-keys-roll-dialog": api_keys_roll_dialog,
    "api-keys-revoked": api_keys_revoked,
    "api-keys-limit-spent": api_keys_limit_spent,
    "key-replace": key_replace_form,
    "key-replaced": key_replaced,
    "key-replace-refused-today": key_replace_refused_today,
    "docs-api-signed-in-operation-tried": docs_api_signed_in_operation_open,
    "docs-sdk-run-result": docs_sdk_run_result,
    "logs-empty": developer("/developer/logs"),
    "logs": logs_with_calls,
    "logs-detail-open": logs_detail_open,
    "log-entry": log_entry_page,
    "webhooks": developer("/developer/webhooks"),
    "webhooks-refused": webhooks_refused,
    "webhooks-endpoint-delete-dialog": webhooks_endpoint_delete_dialog,
    "account": developer("/developer/account"),
    "account-delete-refused": account_delete_refused,
    "account-password": developer("/developer/account/password"),
    "account-password-wrong": account_password_wrong,
    "account-password-weak": account_password_weak,
    "account-email": developer("/developer/account/email"),
    "account-email-link-sent": account_email_link_sent,
    "account-email-link-invalid": account_email_link_invalid,
    "account-verify": developer("/developer/account/verify"),
    "account-verify-wrong-password": account_verify_wrong_password,
    "account-verify-two-factor": account_verify_two_factor,
    "two-factor-setup": developer("/developer/account/two-factor"),
    "two-factor-authenticator": two_factor_choose,
    "two-factor-wrong-code": two_factor_wrong_setup_code,
    "two-factor-on": two_factor_on,
    "recovery-codes": recovery_codes_shown,
    "tf-validate": tf_validate,
    "tf-validate-wrong-code": tf_validate_wrong_code,
    "mf-recovery": mf_recovery,
    "mf-recovery-wrong-code": mf_recovery_wrong_code,
    "logout-page": developer("/logout"),
    "signed-out-everywhere": signed_out_everywhere,
    "billing": developer("/developer/billing"),
    "billing-pro": billing_as("active"),
    "billing-payment-failed": billing_as("past_due"),
    "billing-upgrade": developer("/billing/upgrade?tier=pro"),
    "ops-refused": developer("/developer/ops"),
    "ops": operator("/developer/ops"),
}


class _Ctx:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.mark.parametrize("state", list(PAGES), ids=list(PAGES))
def test_page_has_no_serious_or_critical_axe_violation(
    state, reused_page, app, smtp, live_server, monkeypatch, request
):
    page = reused_page
    ctx = _Ctx(app=app, smtp=smtp, live_server=live_server, monkeypatch=monkeypatch, request=request)
    PAGES[state](page, ctx)
    page.wait_for_load_state("load")
    assert_accessible(page, state)


def test_the_axe_check_fails_on_a_serious_violation_and_names_rule_impact_and_element(context):
    page = context.new_page()
    page.goto("/login")
    assert_accessible(page, "login")
    # What Swagger UI used to render on /docs/api: a select without a name, and a link inside a button.
    page.evaluate(
        """() => {
            const box = document.querySelector("main");
            box.insertAdjacentHTML("beforeend",
                '<select id="unnamed"><option>/api</option></select>' +
                '<button id="outer">Open <a href="#x">link</a></button>');
        }"""
    )
    with pytest.raises(AssertionError) as failed:
        assert_accessible(page, "login with broken markup")
    message = str(failed.value)
    assert "select-name (critical)" in message and "#unnamed" in message
    assert "nested-interactive (serious)" in message and "#outer" in message
    assert "https://dequeuniversity.com/rules/axe/" in message


# A phone's viewport: the layouts change there (the navigation wraps, tables scroll in their region).
PHONE_PAGES = [
    "home",
    "pricing",
    "docs-api",
    "docs-sdk",
    "login-refused",
    "developer-signed-in",
    "api-keys-active-key",
    "api-keys-revoke-dialog",
    "logs",
    "webhooks",
    "account",
    "tf-validate",
    "billing",
    "ops",
]


@pytest.mark.parametrize("state", PHONE_PAGES, ids=PHONE_PAGES)
def test_page_on_a_phone_has_no_serious_axe_violation_and_no_sideways_scroll(
    state, reused_page, app, smtp, live_server, monkeypatch, request
):
    page = reused_page
    page.set_viewport_size({"width": 390, "height": 844})
    ctx = _Ctx(app=app, smtp=smtp, live_server=live_server, monkeypatch=monkeypatch, request=request)
    PAGES[state](page, ctx)
    page.wait_for_load_state("load")
    assert_accessible(page, f"{state} (phone)")
    assert page.evaluate("document.documentElement.scrollWidth") <= 391, f"{state} scrolls sideways on a phone"
