"""/billing: Stripe Checkout, the customer portal and Stripe's webhook."""

from flask import request

from levqor_core import billing, problems
from levqor_core.accounts.models import Account

from . import _caller
from ._reply import Reply, ok


def _portal_account() -> Account:
    if _caller.by_api_key():
        raise problems.NotAuthenticated("Billing is managed from the portal session, not with an API key.")
    return _caller.account()


@_caller.session_limited
def create_checkout_session(*, body: dict) -> Reply:
    """Start a Stripe Checkout for a paid plan."""
    return ok({"url": billing.start_checkout(_portal_account(), body.get("tier"))})


@_caller.session_limited
def create_portal_session() -> Reply:
    """Open Stripe's customer portal for the account's subscription."""
    return ok({"url": billing.portal_url(_portal_account())})


def stripe_webhook(*, body: object = None) -> Reply:
    """Apply a signed Stripe event; the signature covers the raw bytes, not the parsed body."""
    return ok(billing.handle_webhook(request.get_data(), request.headers.get("Stripe-Signature")))
