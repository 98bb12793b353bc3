"""Accounts (issue 13): sign-up with a confirmed email, password reset, generic answers, password
policy and sessions that end on the server. Mail goes through a real SMTP server (aiosmtpd) and
every link is read from the mail received."""

import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import flask_migrate as migrate
import pyotp
import pytest
import sqlalchemy as sa
from itsdangerous import TimestampSigner
from starlette.testclient import TestClient

from levqor_core.accounts import mail as account_mail
from levqor_core.accounts import service as accounts
from levqor_core.accounts import sign_ins
from levqor_core.accounts import totp as once_only_totp
from levqor_core.accounts.models import Account, SignIn
from levqor_core.extensions import db

from .conftest import PASSWORD, Portal, csrf_from
from .helpers import age_log_in, app_on_sqlite, enrol_authenticator, fresh_code, recovery_codes
from .servers import free_port

NEW_PASSWORD = "purple otter gravel lantern"


def _email() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}@example.com"


def _sign_up(client, email: str, password: str = PASSWORD):
    token = csrf_from(client.get("/signup").text)
    return client.post("/signup", data={"email": email, "password": password, "csrf_token": token})


def _log_in(client, email: str, password: str = PASSWORD):
    token = csrf_from(client.get("/login").text)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def _link(app, message, kind: str) -> str:
    """The `kind` link (confirm, reset) of a mail, checked to point at PUBLIC_BASE_URL; its path."""
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    url = re.search(rf"https?://\S+/{kind}/\S+", text).group(0)
    assert url.startswith(app.config["PUBLIC_BASE_URL"] + "/") and url in html
    return urlsplit(url).path


def _new_key(client):
    token = csrf_from(client.get("/developer").text)
    return client.post("/api/key/new", json={}, headers={"X-CSRFToken": token})


def _alerts(page: str) -> str:
    return " ".join(re.findall(r'role="(?:alert|status)">([^<]+)<', page))


@pytest.fixture
def browser(cx):
    return cx.test_client(follow_redirects=False)


# -- sign-up and confirmation --------------------------------------------------------------------------


def test_a_new_developer_confirms_the_mailed_link_before_creating_a_key(app, browser, smtp):
    email = _email()
    signed_up = _sign_up(browser, email.upper())
    assert signed_up.status_code == 302 and signed_up.headers["location"].startswith("/signup/check-email")
    [mail] = smtp.to(email)  # stored and mailed in lower case
    confirm_path = _link(app, mail, "confirm")

    assert _log_in(browser, email).status_code == 302  # unconfirmed developers may sign in and read
    assert browser.get("/docs/api").status_code == 200
    refused = _new_key(browser)
    assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "https://levqor.dev/problems/email-not-verified"
    keys_page = browser.get("/developer/api-keys").text
    assert 'id="confirm-email"' in keys_page and 'id="key-create"' not in keys_page
    assert 'id="resend-confirmation"' in keys_page

    confirmed = browser.get(confirm_path)
    assert confirmed.status_code == 302
    assert "has been confirmed" in _alerts(browser.get(confirmed.headers["location"], follow_redirects=True).text)
    created = _new_key(browser)
    assert created.status_code == 201, created.text


def test_resend_mails_a_new_link_that_works(app, browser, smtp):
    email = _email()
    _sign_up(browser, email)
    _log_in(browser, email)
    page = browser.get("/developer/api-keys").text
    form = re.search(r'<form method="post" action="([^"]+)"', page[page.index('id="confirm-email"') :]).group(1)
    resent = browser.post(form, data={"email": email, "csrf_token": csrf_from(page)})
    assert resent.status_code in (200, 302)
    first, second = smtp.to(email)
    assert browser.get(_link(app, second, "confirm")).status_code == 302
    assert _new_key(browser).status_code == 201


def test_a_confirmation_link_works_once_and_not_after_a_day(app, cx, browser, smtp, monkeypatch):
    email, late = _email(), _email()
    _sign_up(browser, email)
    _sign_up(browser, late)
    link = _link(app, smtp.to(email)[0], "confirm")
    assert browser.get(link).status_code == 302
    again = browser.get(link, follow_redirects=True)
    assert again.status_code == 200 and "already been confirmed" in _alerts(again.text)

    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 24 * 3600 + 5)
    expired = browser.get(_link(app, smtp.to(late)[0], "confirm"), follow_redirects=True)
    assert expired.status_code == 200 and "has expired" in _alerts(expired.text)
    assert "Ask for a new one below" in _alerts(expired.text)
    assert expired.url.path == "/confirm" and 'id="email-form"' in expired.text
    with app.app_context():
        assert accounts.by_email(late).confirmed_at is None


def test_a_link_mailed_under_the_former_token_hashing_still_works(app, browser):
    """Links carry a hash of the address (sha256_crypt before, ~250 ms of CPU each; hex_sha256 now):
    those mailed by the previous release must still confirm after the deploy."""
    email = _email()
    _sign_up(browser, email)
    with app.test_request_context():
        from flask_security.proxies import _security

        account = accounts.by_email(email)
        bound_to_email = _security.hashing_context.hash(account.email, scheme="sha256_crypt")
        assert bound_to_email.startswith("$5$")
        token = _security.confirm_serializer.dumps([str(account.fs_uniquifier), bound_to_email])
    assert browser.get(f"/confirm/{token}").status_code == 302
    with app.app_context():
        assert accounts.by_email(email).confirmed_at is not None


def test_make_run_without_smtp_prints_the_mail_and_says_where_to_look(app, browser, caplog):
    assert not app.config["SMTP_HOST"]
    email = _email()
    signed_up = _sign_up(browser, email)
    page = browser.get(signed_up.headers["location"]).text
    assert 'id="console-mail"' in page and "printed on the console" in page
    account_mail.wait_until_sent()
    printed = "\n".join(r.getMessage() for r in caplog.records if "not sent" in r.getMessage())
    assert f"To: {email}" in printed
    assert re.search(rf"{re.escape(app.config['PUBLIC_BASE_URL'])}/confirm/\S+", printed)


# -- generic answers ----------------------------------------------------------------------------------


def _scrub(page: str, email: str) -> str:
    """The page without what differs by construction: the CSRF token and the address typed in."""
    return re.sub(
        r'(name="csrf-token" content=|name="csrf_token" type="hidden" value=|name="csrf_token" value=)"[^"]+"', "", page
    ).replace(email, "EMAIL")


def test_sign_up_with_a_taken_email_reads_the_same_and_mails_its_owner(app, cx, smtp, portal):
    taken = portal().sign_up().email
    answers = []
    for email in (taken, _email()):
        visitor = cx.test_client(follow_redirects=False)
        response = _sign_up(visitor, email)
        page = visitor.get(response.headers["location"])
        answers.append((response.status_code, response.headers["location"], page.status_code, _scrub(page.text, email)))
        assert "session" not in {c for c in visitor.cookies} or visitor.get("/developer/api-keys").status_code == 302
    assert answers[0] == answers[1]
    notice = smtp.to(taken)[-1]
    text = notice.get_body(("plain",)).get_content()
    assert "already has an account" in text and "/reset/" in text


def test_the_same_new_address_signed_up_several_times_at_once_gets_one_account_and_no_error(app, cx):
    email = _email()
    clients = [cx.test_client(follow_redirects=False) for _ in range(4)]
    tokens = [csrf_from(c.get("/signup").text) for c in clients]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(
            pool.map(
                lambda ct: ct[0].post("/signup", data={"email": email, "password": PASSWORD, "csrf_token": ct[1]}),
                zip(clients, tokens, strict=True),
            )
        )
    assert {a.status_code for a in answers} == {302}
    assert len({a.headers["location"] for a in answers}) == 1
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Account).where(Account.email == email)) == 1


def test_log_in_and_reset_read_the_same_for_unknown_and_known_emails(cx, portal):
    known = portal().sign_up().email
    log_ins, resets = [], []
    for email in (known, "nobody-here@example.com"):
        visitor = cx.test_client(follow_redirects=False)
        refused = _log_in(visitor, email, "wrong password here")
        log_ins.append((refused.status_code, _scrub(refused.text, email)))
        token = csrf_from(visitor.get("/reset").text)
        asked = visitor.post("/reset", data={"email": email, "csrf_token": token})
        resets.append((asked.status_code, _scrub(asked.text, email)))
    assert log_ins[0] == log_ins[1] and log_ins[0][0] == 401
    assert resets[0] == resets[1]


# -- password policy ----------------------------------------------------------------------------------


def test_reset_and_resend_read_the_same_for_a_known_address_while_smtp_is_down(app, cx, caplog, monkeypatch):
    """They mail only an address that has an account. The mail is sent off the request thread, so
    neither the time SMTP takes nor its failure (once a 500) tells a stranger which addresses do."""
    known = _email()
    assert _sign_up(cx.test_client(follow_redirects=False), known).status_code == 302  # not confirmed yet
    account_mail.wait_until_sent()
    caplog.clear()  # its welcome mail, printed on the console (no SMTP_HOST yet)
    monkeypatch.setitem(app.config, "SMTP_HOST", "127.0.0.1")
    monkeypatch.setitem(app.config, "SMTP_PORT", free_port())  # nothing listens there
    monkeypatch.setitem(app.config, "SMTP_STARTTLS", False)
    for path in ("/reset", "/confirm"):
        answers = []
        for email in (known, _email()):
            client = cx.test_client(follow_redirects=False)
            page = client.get(path).text
            answer = client.post(path, data={"email": email, "csrf_token": csrf_from(page)})
            answers.append((answer.status_code, _scrub(answer.text, email)))
        assert answers[0] == answers[1] and answers[0][0] < 500, (path, answers[0][0])
    account_mail.wait_until_sent()
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("account mail to")]
    assert len(refused) == 2 and all(known in line for line in refused)
    assert "/reset/" not in caplog.text and "/confirm/" not in caplog.text  # the links stay out of the log


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short", "at least 8 characters"), ("password", "top-10 common password"), ("12345678", "common password")],
)
def test_weak_passwords_are_refused_with_the_reason(browser, password, reason):
    refused = _sign_up(browser, _email(), password)
    assert refused.status_code == 400
    assert reason in _alerts(refused.text) and 'aria-invalid="true"' in refused.text


# -- password reset -----------------------------------------------------------------------------------


def _ask_reset(client, email: str):
    token = csrf_from(client.get("/reset").text)
    return client.post("/reset", data={"email": email, "csrf_token": token})


def _set_password(client, path: str, password: str):
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    data = {"password": password, "password_confirm": password, "csrf_token": csrf_from(page.text)}
    return client.post(path, data=data)


def test_forgot_password_resets_once_and_ends_every_other_session(app, cx, smtp, portal):
    dev = portal().sign_up()
    assert 'href="/reset"' in cx.test_client().get("/login").text  # "Forgot password?"
    stranger = cx.test_client(follow_redirects=False)
    assert _ask_reset(stranger, dev.email).status_code == 200
    link = _link(app, smtp.to(dev.email)[-1], "reset")

    weak = _set_password(stranger, link, "password")
    assert weak.status_code == 200 and "common password" in _alerts(weak.text)
    done = _set_password(stranger, link, NEW_PASSWORD)
    assert done.status_code == 302
    assert dev.client.get("/developer/api-keys").status_code == 302  # the other session has ended
    notice = smtp.to(dev.email)[-1].get_body(("plain",)).get_content()
    assert "was just changed, and every other session was signed out" in notice and "/reset" in notice

    fresh = cx.test_client(follow_redirects=False)
    assert _log_in(fresh, dev.email, PASSWORD).status_code == 401
    assert _log_in(fresh, dev.email, NEW_PASSWORD).status_code == 302

    again = stranger.get(link, follow_redirects=True)
    assert "not valid any more" in _alerts(again.text)


def test_a_reset_link_expires_after_an_hour(app, cx, smtp, portal, monkeypatch):
    dev = portal().sign_up()
    _ask_reset(cx.test_client(), dev.email)
    link = _link(app, smtp.to(dev.email)[-1], "reset")
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) + 3600 + 5)
    expired = cx.test_client().get(link, follow_redirects=True)
    assert "has expired" in _alerts(expired.text) and "Ask for a new one below" in _alerts(expired.text)
    assert expired.url.path == "/reset" and 'id="email-form"' in expired.text  # where to ask for a new link
    assert _log_in(cx.test_client(follow_redirects=False), dev.email, PASSWORD).status_code == 302


# -- sessions that end --------------------------------------------------------------------------------


def _change_password(client, current: str, new: str):
    page = client.get("/developer/account/password")
    assert page.status_code == 200, page.status_code
    form = {"password": current, "new_password": new, "new_password_confirm": new, "csrf_token": csrf_from(page.text)}
    return client.post("/developer/account/password", data=form)


def _copy_of(cx, p: Portal):
    copy = cx.test_client(follow_redirects=False)
    copy.cookies.update(dict(p.client.cookies))
    assert copy.get("/developer/api-keys").status_code == 200
    return copy


def test_a_cookie_copied_before_logout_stops_working_at_once(cx, portal):
    dev = portal().sign_up()
    copy = _copy_of(cx, dev)
    assert dev.client.post("/logout", data={"csrf_token": dev.csrf}).status_code == 302
    assert copy.get("/developer/api-keys").status_code == 302
    assert copy.get("/api/usage").status_code == 401


def test_a_cookie_copied_before_a_password_change_stops_working(cx, portal, smtp):
    dev = portal().sign_up()
    copy = _copy_of(cx, dev)
    changed = _change_password(dev.client, PASSWORD, NEW_PASSWORD)
    assert changed.status_code == 302, _alerts(changed.text)
    assert dev.client.get("/developer/api-keys").status_code == 200  # the session that changed it goes on
    assert copy.get("/developer/api-keys").status_code == 302
    assert copy.get("/api/usage").status_code == 401
    notice = smtp.to(dev.email)[-1]
    assert "password" in notice["Subject"].lower() and "changed" in notice.get_body(("plain",)).get_content().lower()


# -- operators by role --------------------------------------------------------------------------------


def test_the_ops_role_opens_developer_ops_and_only_for_a_confirmed_account(app, cx, portal, monkeypatch):
    runner = app.test_cli_runner()
    pending = portal().sign_up(confirm=False)
    monkeypatch.setitem(app.config, "OPS_EMAILS", pending.email)  # a stranger claiming a listed address
    assert pending.client.get("/developer/ops").status_code == 403
    refused = runner.invoke(args=["accounts", "grant-role", pending.email, "ops"])
    assert refused.exit_code != 0 and "not confirmed" in refused.output
    assert pending.client.get("/developer/ops").status_code == 403

    dev = portal().sign_up()
    monkeypatch.setitem(app.config, "OPS_EMAILS", dev.email)  # confirmed and listed: no role, no page
    assert dev.client.get("/developer/ops").status_code == 403
    granted = runner.invoke(args=["accounts", "grant-role", dev.email.upper(), "ops"])
    assert granted.exit_code == 0, granted.output
    assert dev.client.get("/developer/ops").status_code == 200
    assert runner.invoke(args=["accounts", "revoke-role", dev.email, "ops"]).exit_code == 0
    assert dev.client.get("/developer/ops").status_code == 403
    assert runner.invoke(args=["accounts", "grant-role", dev.email, "admin"]).exit_code != 0


def test_operators_create_and_confirm_accounts_from_the_cli(app, cx):
    runner = app.test_cli_runner()
    made = runner.invoke(args=["accounts", "create", "Ops@Example.com"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert made.exit_code == 0, made.output
    weak = runner.invoke(args=["accounts", "create", "weak@example.com"], input="password\npassword\n")
    assert weak.exit_code != 0 and "common password" in weak.output
    browser = cx.test_client(follow_redirects=False)
    assert _log_in(browser, "ops@example.com").status_code == 302
    assert _new_key(browser).status_code == 201  # an operator vouched for the address

    _sign_up(cx.test_client(follow_redirects=False), "later@example.com")
    confirmed = runner.invoke(args=["accounts", "confirm", "later@example.com"])
    assert confirmed.exit_code == 0 and "is confirmed" in confirmed.output
    assert "already confirmed" in runner.invoke(args=["accounts", "confirm", "later@example.com"]).output


def test_log_out_ends_only_that_browser_and_sign_out_everywhere_ends_all(cx, portal):
    dev = portal().sign_up()
    laptop = portal()
    laptop.email = dev.email
    laptop.log_in()
    assert dev.client.post("/logout", data={"csrf_token": dev.csrf}).status_code == 302
    assert laptop.client.get("/developer/api-keys").status_code == 200  # another log-in goes on

    phone = portal()
    phone.email = dev.email
    phone.log_in()
    copy = _copy_of(cx, phone)
    page = laptop.client.get("/developer/account")
    assert page.status_code == 200 and 'id="sign-out-everywhere"' in page.text
    ended = laptop.client.post("/developer/account/sign-out-everywhere", data={"csrf_token": csrf_from(page.text)})
    assert ended.status_code == 302
    for client in (laptop.client, phone.client, copy):
        assert client.get("/developer/api-keys").status_code == 302
        assert client.get("/api/usage").status_code == 401


# -- account settings ---------------------------------------------------------------------------------


def _sign_in_rows(client) -> list[list[str]]:
    page = client.get("/developer/account").text
    table = page[page.index('id="account-sign-ins"') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr><td[^>]*>(.*?)</tr>", table, re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.split(r"</td>\s*<td[^>]*>", row)] for row in rows]


def test_flask_security_tokens_sign_nobody_in(cx, portal):
    """Flask-Security-Too mints a token on request (?include_auth_token) that would open every page
    for 15 minutes, fresh, and outlive the log-out: the portal signs in with its session only."""
    dev = portal().sign_up()
    with cx.app.test_request_context():
        token = accounts.by_email(dev.email).get_auth_token()
    stranger = cx.test_client(follow_redirects=False)
    for how in ({"headers": {"Authentication-Token": token}}, {"params": {"auth_token": token}}):
        assert stranger.get("/developer/account", **how).status_code == 302
        assert stranger.get("/developer/account/recovery-codes", **how).status_code == 302
        assert stranger.get("/api/usage", **how).status_code == 401


def test_the_account_page_shows_recent_sign_ins_newest_first_and_keeps_the_last_twenty(cx, portal):
    dev = portal().sign_up()
    page = dev.client.get("/developer/account").text
    assert dev.email in page and "confirmed" in page
    assert 'href="/developer/account/password"' in page and 'href="/developer/account/email"' in page
    totp = _enrol_authenticator(dev)
    codes = _recovery_codes(dev)

    phone = TestClient(
        cx, follow_redirects=False, client=("203.0.113.7", 50000), headers={"User-Agent": "PhoneBrowser/2"}
    )
    page = _log_in(phone, dev.email)
    form = phone.get(page.headers["location"]).text
    assert phone.post("/tf-validate", data={"code": fresh_code(totp), "csrf_token": csrf_from(form)}).status_code == 302
    lost = TestClient(cx, follow_redirects=False, client=("198.51.100.9", 50000))
    _log_in(lost, dev.email)
    form = lost.get("/mf-recovery").text
    assert lost.post("/mf-recovery", data={"code": codes[0], "csrf_token": csrf_from(form)}).status_code == 302

    rows = _sign_in_rows(phone)
    assert [(row[1], row[3]) for row in rows[:2]] == [
        ("198.51.100.9", "password + recovery code"),
        ("203.0.113.7", "password + authenticator app"),
    ]
    assert "PhoneBrowser/2" in rows[1][2]
    assert rows[2][3] == "password" and "(the newest)" in rows[0][0]

    with cx.app.app_context():
        account_id = accounts.by_email(dev.email).id
    for n in range(sign_ins.KEEP):
        again = TestClient(cx, follow_redirects=False, client=(f"192.0.2.{n + 10}", 50000))  # under the log-in limits
        _log_in(again, dev.email)
        form = again.get("/tf-validate").text
        # More sign-ins than a code's validity holds fresh codes: forget the step used (codes work once).
        cx.app.extensions["levqor.redis"].delete(once_only_totp.KEY.format(account_id))
        assert again.post("/tf-validate", data={"code": totp.now(), "csrf_token": csrf_from(form)}).status_code == 302
    with cx.app.app_context():
        stored = db.session.scalar(
            sa.select(sa.func.count()).select_from(SignIn).where(SignIn.account_id == account_id)
        )
    assert stored == sign_ins.KEEP  # the oldest went
    assert "198.51.100.9" not in str(_sign_in_rows(phone))


def test_a_new_email_takes_effect_once_confirmed_at_the_new_address(app, cx, smtp, portal):
    dev = portal().sign_up()
    page = dev.client.get("/developer/account/email")
    assert page.status_code == 200
    new = _email()
    asked = dev.client.post("/developer/account/email", data={"email": new, "csrf_token": csrf_from(page.text)})
    assert asked.status_code == 200
    with app.app_context():
        assert accounts.by_email(dev.email) is not None and accounts.by_email(new) is None
    link = _link(app, smtp.to(new)[-1], "developer/account/email")
    copy = _copy_of(cx, dev)
    _ask_reset(cx.test_client(), dev.email)  # a reset link in the old inbox, not used yet
    old_reset = _link(app, smtp.to(dev.email)[-1], "reset")

    opened = dev.client.get(link)
    assert opened.status_code == 302
    with app.app_context():
        assert accounts.by_email(dev.email) is None and accounts.by_email(new).confirmed_at is not None
    # Every session ended, the browser that opened the link too: it signs in with the new address.
    for browser in (dev.client, copy):
        assert browser.get("/developer/api-keys").status_code == 302
        assert browser.get("/api/usage").status_code == 401
    landing = dev.client.get(opened.headers["location"], follow_redirects=True)
    assert "log in with the new address" in _alerts(landing.text)
    notice = smtp.to(dev.email)[-1]
    assert notice["Subject"] == "Your Levqor email address was changed"
    assert new in notice.get_body(("plain",)).get_content() and new in notice.get_body(("html",)).get_content()
    refused = cx.test_client().get(old_reset, follow_redirects=True)  # the old inbox's link stopped working
    assert "not valid any more" in _alerts(refused.text)
    assert dev.client.get(link, follow_redirects=True).status_code == 200  # used twice: refused, readably
    fresh = cx.test_client(follow_redirects=False)
    assert _log_in(fresh, new).status_code == 302


def test_security_changes_want_a_recent_log_in(app, portal):
    dev = portal().sign_up()
    age_log_in(app, dev.client, app.config["SECURITY_FRESHNESS"] + timedelta(seconds=1))
    stale = dev.client.get("/developer/account/email")  # the password change asks for the password itself
    assert stale.status_code == 302 and urlsplit(stale.headers["location"]).path == "/developer/account/verify"
    verify = dev.client.get(stale.headers["location"])
    assert verify.status_code == 200 and "Confirm it is you" in verify.text


# -- two-factor sign-in -------------------------------------------------------------------------------


def test_a_password_change_does_not_make_the_session_fresh_without_the_second_factor(app, portal):
    """Flask-Security-Too signs the browser in again after a password change; that must not count
    as a full log-in, or the password alone would turn two-factor off or change the email."""
    dev = portal().sign_up()
    _enrol_authenticator(dev)
    age_log_in(app, dev.client, app.config["SECURITY_FRESHNESS"] + timedelta(seconds=1))
    sensitive = ("/developer/account/two-factor", "/developer/account/recovery-codes", "/developer/account/email")
    for path in sensitive:
        stale = dev.client.get(path)
        assert stale.status_code == 302 and urlsplit(stale.headers["location"]).path == "/developer/account/verify"

    page = dev.client.get("/developer/account/password")
    authenticated_at = _session_of(app, dev)["fs_paa"]
    changed = _change_password(dev.client, PASSWORD, NEW_PASSWORD)
    assert changed.status_code == 302, _alerts(changed.text)
    assert _session_of(app, dev)["fs_paa"] == authenticated_at  # the full log-in's time, as it was
    assert dev.client.get("/developer/api-keys").status_code == 200  # still signed in
    for path in sensitive:
        still_stale = dev.client.get(path)
        assert still_stale.status_code == 302, path
        assert urlsplit(still_stale.headers["location"]).path == "/developer/account/verify"
    turn_off = dev.client.post(
        "/developer/account/two-factor", data={"setup": "disable", "csrf_token": csrf_from(page.text)}
    )
    assert turn_off.status_code == 302 and "/developer/account/verify" in turn_off.headers["location"]
    with app.app_context():
        assert accounts.by_email(dev.email).tf_primary_method == "authenticator"


def _session_of(app, dev: Portal) -> dict:
    """What the browser's signed session cookie holds."""
    cookie = dev.client.cookies.get(app.config["SESSION_COOKIE_NAME"])
    return app.session_interface.get_signing_serializer(app).loads(cookie)


def test_an_authenticator_code_works_once_even_sent_twice_at_once(cx, portal):
    dev = portal().sign_up()
    totp = _enrol_authenticator(dev)

    def at_second_factor(address: str):
        client = TestClient(cx, follow_redirects=False, client=(address, 50000))
        _log_in(client, dev.email)
        return client, csrf_from(client.get("/tf-validate").text)

    code = fresh_code(totp)
    first, token = at_second_factor("192.0.2.201")
    assert first.post("/tf-validate", data={"code": code, "csrf_token": token}).status_code == 302
    seen, token = at_second_factor("192.0.2.202")  # the same code, read over a shoulder
    replayed = seen.post("/tf-validate", data={"code": code, "csrf_token": token})
    assert replayed.status_code == 200 and "Invalid code" in replayed.text
    assert seen.get("/developer/api-keys").status_code == 302  # still signed out
    assert seen.post("/tf-validate", data={"code": fresh_code(totp), "csrf_token": token}).status_code == 302

    code = fresh_code(totp)
    racing = [at_second_factor(f"192.0.2.{n}") for n in (203, 204, 205)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        statuses = list(
            pool.map(lambda c: c[0].post("/tf-validate", data={"code": code, "csrf_token": c[1]}).status_code, racing)
        )
    assert sorted(statuses) == [200, 200, 302]


def _enrol_authenticator(dev: Portal) -> pyotp.TOTP:
    return enrol_authenticator(dev.client)


def _recovery_codes(dev: Portal) -> list[str]:
    return recovery_codes(dev.client)


def test_two_factor_with_an_authenticator_code_and_with_a_recovery_code(cx, portal):
    dev = portal().sign_up()
    totp = _enrol_authenticator(dev)
    assert "on</span>" in dev.client.get("/developer/account").text
    codes = _recovery_codes(dev)
    assert len(codes) == 5
    with cx.app.app_context():
        stored = accounts.by_email(dev.email).mf_recovery_codes
        assert len(stored) == 5 and not set(codes) & set(stored)  # encrypted at rest

    later = cx.test_client(follow_redirects=False)
    password_ok = _log_in(later, dev.email)
    assert password_ok.status_code == 302 and "/tf-validate" in password_ok.headers["location"]
    assert later.get("/developer/api-keys").status_code == 302  # the password alone signs nobody in
    page = later.get(password_ok.headers["location"]).text
    wrong = later.post("/tf-validate", data={"code": "000000", "csrf_token": csrf_from(page)})
    assert wrong.status_code == 200 and "Invalid code" in wrong.text
    right = later.post("/tf-validate", data={"code": fresh_code(totp), "csrf_token": csrf_from(page)})
    assert right.status_code == 302
    assert later.get("/developer/api-keys").status_code == 200

    lost_phone = cx.test_client(follow_redirects=False)
    assert _log_in(lost_phone, dev.email).status_code == 302
    page = lost_phone.get("/mf-recovery").text
    recovered = lost_phone.post("/mf-recovery", data={"code": codes[0], "csrf_token": csrf_from(page)})
    assert recovered.status_code == 302, _alerts(recovered.text)
    assert lost_phone.get("/developer/api-keys").status_code == 200

    again = cx.test_client(follow_redirects=False)
    _log_in(again, dev.email)
    page = again.get("/mf-recovery").text
    reused = again.post("/mf-recovery", data={"code": codes[0], "csrf_token": csrf_from(page)})
    assert reused.status_code == 200 and again.get("/developer/api-keys").status_code == 302


def test_wrong_two_factor_codes_are_rate_limited_per_address(cx, portal):
    dev = portal().sign_up()
    _enrol_authenticator(dev)
    guesser = TestClient(cx, follow_redirects=False, client=("198.51.100.31", 40000))
    _log_in(guesser, dev.email)
    page = guesser.get("/tf-validate").text
    codes = [
        guesser.post("/tf-validate", data={"code": f"{n:06d}", "csrf_token": csrf_from(page)}).status_code
        for n in range(6)
    ]
    assert codes == [200] * 5 + [429]


def test_code_guesses_from_many_addresses_are_limited_per_account(cx, portal):
    """A guesser with many addresses (a botnet) gets 10 tries per 15 minutes at one account's codes,
    on all the pages that check them together."""
    dev = portal().sign_up()
    _enrol_authenticator(dev)
    answers = []
    for n, path in enumerate(("/tf-validate", "/tf-validate", "/mf-recovery", "/mf-recovery")):
        guesser = TestClient(cx, follow_redirects=False, client=(f"203.0.113.{10 + n}", 40000))
        _log_in(guesser, dev.email)
        page = guesser.get(path).text
        answers += [
            guesser.post(path, data={"code": f"{n}{t:05d}", "csrf_token": csrf_from(page)}).status_code
            for t in range(3)
        ]
    assert answers == [200] * 10 + [429] * 2  # one budget for the account, whichever page
    other = portal().sign_up()  # another account's codes are not held up
    _enrol_authenticator(other)
    elsewhere = TestClient(cx, follow_redirects=False, client=("203.0.113.20", 40000))
    _log_in(elsewhere, other.email)
    page = elsewhere.get("/tf-validate").text
    assert elsewhere.post("/tf-validate", data={"code": "000000", "csrf_token": csrf_from(page)}).status_code == 200


def test_the_addresses_of_one_ipv6_network_share_its_limit(cx, portal):
    """One IPv6 host usually holds a whole /64: counted per address, its limit would never run out."""
    dev = portal().sign_up()
    _enrol_authenticator(dev)
    answers = []
    for host in ("2001:db8:5:7::1", "2001:db8:5:7::2", "2001:db8:5:7:ffff::9"):
        guesser = TestClient(cx, follow_redirects=False, client=(host, 40000))
        _log_in(guesser, dev.email)
        page = guesser.get("/tf-validate").text
        answers += [
            guesser.post("/tf-validate", data={"code": f"99{t:04d}", "csrf_token": csrf_from(page)}).status_code
            for t in range(2)
        ]
    assert answers == [200] * 5 + [429]
    neighbour = TestClient(cx, follow_redirects=False, client=("2001:db8:5:8::1", 40000))  # the next /64
    _log_in(neighbour, dev.email)
    page = neighbour.get("/tf-validate").text
    assert neighbour.post("/tf-validate", data={"code": "123456", "csrf_token": csrf_from(page)}).status_code == 200


def test_the_migration_encrypts_recovery_codes_saved_in_clear_and_they_keep_working(tmp_path, redis_server):
    """Accounts that set up two-factor before 0007 had their codes stored in clear."""
    old = app_on_sqlite(tmp_path / "before-0007.db", redis_server)
    printed = ["abcd-1234-efgh", "ijkl-5678-mnop"]
    with old.app_context():
        migrate.upgrade(revision="0006")
        db.session.execute(
            sa.insert(Account.__table__).values(
                email="early@example.com",
                password_hash="x",
                tier="sandbox",
                created_at=datetime.now(UTC),
                active=True,
                fs_uniquifier="u1",
                mf_recovery_codes=printed,  # the column type joins the list with commas
            )
        )
        db.session.commit()

        migrate.upgrade()

        account = accounts.by_email("early@example.com")
        assert not set(printed) & set(account.mf_recovery_codes)
        recovery = old.extensions["security"]._mf_recovery_codes_util  # this app's own
        assert all(recovery.check_recovery_code(account, code) for code in printed)
        assert not recovery.check_recovery_code(account, "zzzz-0000-zzzz")
        db.session.remove()


def test_migration_0009_gives_the_ops_role_to_confirmed_accounts_listed_in_ops_emails_only(
    tmp_path, redis_server, caplog
):
    """OPS_EMAILS let confirmed listed accounts into /developer/ops until 0009; the role does now."""
    old = app_on_sqlite(
        tmp_path / "before-0009.db", redis_server, OPS_EMAILS=" Lead@Example.com, stranger@example.com,"
    )
    with old.app_context():
        migrate.upgrade(revision="0008")
        for email, confirmed in (
            ("lead@example.com", True),
            ("stranger@example.com", False),
            ("dev@example.com", True),
        ):
            db.session.execute(
                sa.insert(Account.__table__).values(
                    email=email,
                    password_hash="x",
                    tier="sandbox",
                    created_at=datetime.now(UTC),
                    confirmed_at=datetime.now(UTC) if confirmed else None,
                    active=True,
                    fs_uniquifier=email,
                )
            )
        db.session.commit()

        migrate.upgrade()

        operators = {a.email for a in db.session.scalars(sa.select(Account)) if accounts.is_operator(a)}
        assert operators == {"lead@example.com"}
        db.session.remove()
    # Afterwards the app does not read it, and says so where ops will look.
    assert "OPS_EMAILS is read only by migration 0009" in caplog.text


def test_a_stranger_cannot_mail_bomb_an_address_through_reset_or_confirmation(cx, smtp):
    bomber = TestClient(cx, follow_redirects=False, client=("198.51.100.77", 40000))
    for path in ("/reset", "/confirm"):
        page = bomber.get(path).text
        answers = [
            bomber.post(path, data={"email": "victim@example.com", "csrf_token": csrf_from(page)}).status_code
            for _ in range(6)
        ]
        assert answers[-1] == 429 and 429 not in answers[:5], (path, answers)


def test_a_stolen_session_guesses_no_password_and_mails_no_inbox_from_the_account_pages(cx, portal, smtp):
    """The password change checks the current password, and the email change mails whatever address
    it is given: both are limited per address like the code pages."""
    dev = portal().sign_up()
    guesses = [_change_password(dev.client, f"guess number {n}", NEW_PASSWORD).status_code for n in range(6)]
    assert guesses[-1] == 429 and 429 not in guesses[:5], guesses

    page = dev.client.get("/developer/account/email").text
    asks = [
        dev.client.post("/developer/account/email", data={"email": "victim@example.com", "csrf_token": csrf_from(page)})
        for _ in range(6)
    ]
    assert [a.status_code for a in asks] == [200] * 5 + [429]
    assert len(smtp.to("victim@example.com")) == 5


def test_without_smtp_on_a_dyno_the_mail_and_its_link_stay_out_of_the_log(caplog):
    from levqor_core.outbound_mail import LogSender

    LogSender({"MAIL_BODY_IN_LOG": False}).send("dev@example.com", "Reset", "https://x/reset/SECRET-TOKEN")
    assert "dev@example.com" in caplog.text and "SECRET-TOKEN" not in caplog.text
    LogSender({"MAIL_BODY_IN_LOG": True}).send("dev@example.com", "Reset", "https://x/reset/LOCAL-TOKEN")
    assert "LOCAL-TOKEN" in caplog.text  # make run: the link is on the console
