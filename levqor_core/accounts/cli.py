"""Operator commands: `flask accounts ...`."""

import click
from flask.cli import AppGroup

from levqor_core.accounts import service as accounts
from levqor_core.limits import tiers

accounts_cli = AppGroup("accounts", help="Manage developer accounts.")


@accounts_cli.command("set-tier")
@click.argument("email")
@click.argument("tier")
def set_tier(email: str, tier: str):
    """Move ACCOUNT (by email) to TIER (sandbox, pro or enterprise; any case)."""
    account = accounts.by_email(email)
    if account is None:
        raise click.ClickException(f"No account with email {email!r}.")
    try:
        accounts.set_tier(account, tier)
    except accounts.AccountError as err:
        raise click.ClickException(str(err)) from None
    t = tiers.get(account.tier)
    click.echo(f"{account.email} is now on {t.label} ({t.quota_label}, {t.burst_per_second}/s burst).")


@accounts_cli.command("create")
@click.argument("email")
@click.password_option()
def create(email: str, password: str):
    """Create an account."""
    try:
        account = accounts.sign_up(email, password)
    except accounts.AccountError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"Created account {account.id} for {account.email}.")
