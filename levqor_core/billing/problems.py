"""The billing domain's problems (problem+json on the API, readable messages on the portal)."""

from levqor_core import problems


class BillingNotConfigured(problems.ServiceUnavailable):
    slug, title = "billing-not-configured", "Billing is not configured"


class PaymentProviderError(problems.Problem):
    status, slug, title = 502, "payment-provider-error", "The payment provider did not answer as expected"


class UnknownPlan(problems.BadRequest):
    slug, title = "unknown-plan", "Unknown plan"


class AlreadySubscribed(problems.Conflict):
    slug, title = "already-subscribed", "Already subscribed"


class NoBillingAccount(problems.Conflict):
    slug, title = "no-billing-account", "No paid plan to manage"


class InvalidSignature(problems.BadRequest):
    slug, title = "invalid-webhook-signature", "Invalid webhook signature"


class InvalidEvent(problems.BadRequest):
    slug, title = "invalid-webhook-event", "Invalid webhook event"
