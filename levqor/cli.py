"""Operator commands: `flask accounts ...`, `flask usage ...`."""

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from . import accounts, metering, tiers

accounts_cli = AppGroup("accounts", help="Manage developer accounts.")
usage_cli = AppGroup("usage", help="Usage counters.")


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


@usage_cli.command("flush")
def flush():
    """Persist the Redis usage counters to the database now."""
    rows = metering.flush_usage(current_app.extensions["levqor.redis"])
    click.echo(f"Persisted {rows} usage row(s).")


def register(app: Flask) -> None:
    app.cli.add_command(accounts_cli)
    app.cli.add_command(usage_cli)
    from .jobs_cli import jobs_cli

    app.cli.add_command(jobs_cli)
    from .billing_cli import billing_cli

    app.cli.add_command(billing_cli)
