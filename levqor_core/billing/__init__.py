"""Billing with Stripe: the catalogue, Checkout and the customer portal, the webhook's state machine, housekeeping."""
