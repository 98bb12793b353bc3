"""The whole account journey with the keyboard alone, axe-checked on every page along the way.

Sign up, confirm from the mail, create a key (and answer the revoke dialog), reset the password
through "Forgot password?", turn on two-factor sign-in, sign out and in again with a code, delete
the account. Every control is reached with Tab (or Shift+Tab) and used with Enter, Space or typing;
each time the test checks which element has focus and that the focus is drawn (:focus-visible).
Opening the mailed links is the one navigation by address, as a mail client would do."""

import re
from urllib.parse import urlsplit

import pyotp
from playwright.sync_api import expect

from levqor_core.accounts import service as accounts

from ..conftest import PASSWORD
from ..helpers import fresh_code
from .axe import assert_accessible

NEW_PASSWORD = "purple otter gravel lantern"
MAX_TABS = 80

_DESCRIBE = """el => el === document.body ? "<body>" :
    el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + " "
    + JSON.stringify((el.textContent || el.value || "").trim().slice(0, 30))"""


def _focused(page) -> str:
    return page.evaluate(f"({_DESCRIBE})(document.activeElement)")


def tab_to(page, target, backwards: bool = False) -> None:
    """Presses Tab (Shift+Tab) until `target` has focus; fails naming the stops on the way if it never does.
    Then checks the focus is visible: the element matches :focus-visible and draws an outline."""
    key = "Shift+Tab" if backwards else "Tab"
    stops = []
    for _ in range(MAX_TABS):
        page.keyboard.press(key)
        if target.evaluate("el => el === document.activeElement"):
            break
        stops.append(_focused(page))
    else:
        raise AssertionError(f"{key} never reached {target}; focus went: {stops}")
    shown = target.evaluate(
        """el => { const s = getComputedStyle(el);
                   return el.matches(':focus-visible')
                       && s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0; }"""
    )
    assert shown, f"{_focused(page)} has focus but no visible focus indicator"


def type_into(page, target, text: str) -> None:
    tab_to(page, target)
    page.keyboard.type(text)


def mailed_path(smtp, email: str, kind: str) -> str:
    text = smtp.to(email)[-1].get_body(("plain",)).get_content()
    return urlsplit(re.search(rf"https?://\S+/{kind}/\S+", text).group(0)).path


def log_in_by_keyboard(page, email: str, password: str) -> None:
    expect(page.get_by_role("heading", name="Log in", level=1)).to_be_visible()
    assert_accessible(page, "log in")
    type_into(page, page.get_by_label("Email"), email)
    type_into(page, page.get_by_label("Password"), password)
    page.keyboard.press("Enter")  # submits the form from its last field


def log_out_by_keyboard(page) -> None:
    # Log out is in the account menu of the top bar: open it, then Tab to it.
    tab_to(page, page.locator("#account-menu-box > summary"), backwards=True)
    page.keyboard.press("Enter")
    tab_to(page, page.get_by_role("button", name="Log out"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("status")).to_have_text("You are signed out.")


def test_sign_up_confirm_key_reset_two_factor_and_delete_with_the_keyboard_alone(context, console, app, smtp):
    email = "keyboard-only@example.com"
    page = console.attach(context.new_page())
    page.goto("/developer")
    assert_accessible(page, "developer (visitor)")

    # The skip link comes first and moves focus to the content.
    tab_to(page, page.get_by_role("link", name="Skip to content"))
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    # Sign up.
    tab_to(page, page.get_by_role("navigation", name="Main").get_by_role("link", name="Sign up"), backwards=True)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/signup"))
    assert_accessible(page, "sign up")
    type_into(page, page.get_by_label("Email"), email)
    type_into(page, page.get_by_label("Password"), PASSWORD)
    tab_to(page, page.get_by_role("button", name="Sign up"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    assert_accessible(page, "check your email")

    # Confirm: the mailed link, then log in.
    page.goto(mailed_path(smtp, email, "confirm"))
    log_in_by_keyboard(page, email, PASSWORD)
    expect(page).to_have_url(re.compile(r"/developer/api-keys$"))
    assert_accessible(page, "API keys, no key")

    # Create the key: focus lands on its copy button; Enter copies it.
    tab_to(page, page.get_by_role("button", name="Create key"))
    page.keyboard.press("Enter")
    expect(page.locator("#new-key")).to_be_visible()
    expect(page.locator("#copy-new-key")).to_be_focused()
    raw = page.locator("#new-key").inner_text().strip()
    assert_accessible(page, "API keys, new key shown")
    page.keyboard.press("Enter")
    expect(page.locator("#copy-new-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == raw
    tab_to(page, page.get_by_role("link", name="I have saved it"))
    page.keyboard.press("Enter")
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.locator("#key-hint")).to_have_text(f"{raw[:8]}…{raw[-4:]}")
    assert_accessible(page, "API keys, active key")

    # The revoke dialog: focus moves into it (on Cancel), Esc closes it and gives focus back.
    revoke = page.get_by_role("button", name="Revoke")
    tab_to(page, revoke)
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name=re.compile(r"^Revoke key lvq_.*\? It stops working at once"))
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    assert_accessible(page, "revoke dialog")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(revoke).to_be_focused()
    expect(page.locator("#key-hint")).to_be_visible()  # Esc revoked nothing
    # Again, and this time confirm from the keyboard: the dialog's own Revoke button.
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    tab_to(page, dialog.get_by_role("button", name="Revoke"), backwards=True)
    page.keyboard.press("Enter")
    expect(page.locator("#key-notice")).to_contain_text("is revoked")
    expect(page.locator("#no-key")).to_be_visible()
    assert_accessible(page, "API keys, key revoked")

    # Forgot password: from the log-in page, the mailed link, a new password.
    log_out_by_keyboard(page)
    tab_to(page, page.get_by_role("link", name="Forgot password?"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    assert_accessible(page, "forgot password")
    type_into(page, page.get_by_label("Email"), email)
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_contain_text(re.compile("email", re.I))
    assert_accessible(page, "reset link sent")
    page.goto(mailed_path(smtp, email, "reset"))
    assert_accessible(page, "choose a new password")
    for field in page.locator("input[type=password]").all():  # the new password (and its retyping, if asked)
        type_into(page, field, NEW_PASSWORD)
    tab_to(page, page.get_by_role("button", name="Save the new password"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/login"))
    log_in_by_keyboard(page, email, NEW_PASSWORD)
    expect(page).to_have_url(re.compile(r"/developer$"))

    # Two-factor sign-in: the account page, the choice, the key shown, the first code.
    tab_to(page, page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Account"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    assert_accessible(page, "your account")
    tab_to(page, page.get_by_role("link", name="Turn on two-factor sign-in"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Two-factor sign-in", level=1)).to_be_visible()
    assert_accessible(page, "two-factor setup")
    authenticator = page.get_by_role("radio", name=re.compile("authenticator app"))
    tab_to(page, authenticator)
    page.keyboard.press("Space")
    expect(authenticator).to_be_checked()
    tab_to(page, page.get_by_role("button", name="Continue"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    assert_accessible(page, "two-factor: scan or type the key")
    totp = pyotp.TOTP(page.locator("#totp-key").inner_text().replace("-", ""))
    type_into(page, page.get_by_label("The 6-digit code your app now shows"), fresh_code(totp))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/developer/account$"))
    expect(page.locator("#account-two-factor")).to_contain_text("Signing in asks for a code")
    assert_accessible(page, "your account, two-factor on")

    # Sign out, and in again: the password, then the app's code.
    log_out_by_keyboard(page)
    log_in_by_keyboard(page, email, NEW_PASSWORD)
    expect(page).to_have_url(re.compile(r"/tf-validate"))
    assert_accessible(page, "two-factor code")
    type_into(page, page.get_by_label("Code from your app"), "000000")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("Code from your app")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page, "two-factor code refused")
    type_into(page, page.get_by_label("Code from your app"), fresh_code(totp))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/developer"))
    expect(page.locator("#account-menu-box > summary")).to_be_visible()

    # Delete the account.
    tab_to(page, page.get_by_role("navigation", name="Dashboard").get_by_role("link", name="Account"))
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Your account", level=1)).to_be_visible()
    type_into(page, page.get_by_label("Your password"), NEW_PASSWORD)
    type_into(page, page.get_by_label("Authenticator code or recovery code"), fresh_code(totp))  # two-factor is on
    tab_to(page, page.get_by_role("button", name="Delete my account"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/signup"))
    expect(page.get_by_role("status")).to_contain_text("Your account is deleted")
    assert_accessible(page, "account deleted")
    with app.app_context():
        assert accounts.by_email(email) is None

    unexpected = [e for e in console.errors if "status of 4" not in e]  # the refused code, on purpose
    assert not unexpected, unexpected
