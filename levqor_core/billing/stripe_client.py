"""The Stripe client for the configured account, shared by the process, and what its failures mean."""

import logging

import stripe
from flask import current_app

from levqor_core.billing.problems import BillingNotConfigured, PaymentProviderError

log = logging.getLogger(__name__)
# The library logs every request and response at INFO; our own lines say what happened.
logging.getLogger("stripe").setLevel(logging.WARNING)


def is_configured() -> bool:
    """Whether this server has a Stripe account to bill with (STRIPE_SECRET_KEY)."""
    return bool(current_app.config.get("STRIPE_SECRET_KEY"))


def client() -> stripe.StripeClient:
    """A client for the configured Stripe account (STRIPE_API_BASE may point at a local fake)."""
    key = current_app.config.get("STRIPE_SECRET_KEY")
    if not key:
        raise BillingNotConfigured("Billing is not set up on this server (STRIPE_SECRET_KEY is unset).")
    base = current_app.config.get("STRIPE_API_BASE") or stripe.DEFAULT_API_BASE
    cached = current_app.extensions.get("levqor.stripe")
    if cached and cached[0] == (key, base):
        return cached[1]  # shared: its HTTP sessions are per thread, and connections are reused
    sc = stripe.StripeClient(
        key,
        base_addresses={"api": base},
        # The library retries network errors and 409/429/5xx with idempotency keys it generates.
        max_network_retries=2,
        http_client=stripe.RequestsClient(timeout=(5, 30)),
    )
    current_app.extensions["levqor.stripe"] = ((key, base), sc)
    return sc


def provider_error(err: stripe.StripeError) -> PaymentProviderError:
    """The problem to raise for a failed Stripe call, logged with what Stripe said."""
    log.warning("stripe call failed: %s (code=%s, status=%s)", err.user_message or err, err.code, err.http_status)
    return PaymentProviderError("Stripe refused or failed the request; try again in a minute.")


def public_base_url() -> str:
    """Where Stripe sends the customer back to (PUBLIC_BASE_URL, never the request's Host)."""
    return current_app.config.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
