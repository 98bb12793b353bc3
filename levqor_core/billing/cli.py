"""Operator commands: `flask billing ...`."""

import click
import stripe
from flask.cli import AppGroup

from levqor_core import billing
from levqor_core.columns import utcnow

billing_cli = AppGroup("billing", help="Stripe billing: catalogue and plan housekeeping.")


@billing_cli.command("sync-products")
def sync_products():
    """Create or update the tier products and monthly prices in Stripe (safe to run again)."""
    try:
        changes = billing.sync_catalogue()
    except billing.BillingNotConfigured as err:
        raise click.ClickException(err.detail) from None
    except stripe.StripeError as err:
        raise click.ClickException(f"Stripe refused the request: {err.user_message or err}") from None
    for change in changes:
        click.echo(change)
    click.echo(f"{len(changes)} change(s)." if changes else "The Stripe catalogue is up to date; nothing changed.")


@billing_cli.command("downgrade-lapsed")
def downgrade_lapsed():
    """Move accounts whose cancelled or unpaid plan has ended back to Sandbox."""
    click.echo(f"{billing.downgrade_lapsed(utcnow())} account(s) moved to Sandbox.")
