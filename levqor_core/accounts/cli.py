"""Operator commands: `flask accounts ...`."""

import click
from flask.cli import AppGroup

from levqor_core import tiers
from levqor_core.accounts import service as accounts

accounts_cli = AppGroup("accounts", help="Manage developer accounts.")


def _account(email: str):
    account = accounts.by_email(email)
    if account is None:
        raise click.ClickException(f"No account with email {email!r}.")
    return account


def _apply(rule, *args):
    """Run an account rule; its refusal is the command's error message."""
    try:
        return rule(*args)
    except accounts.AccountError as err:
        raise click.ClickException(str(err)) from None


@accounts_cli.command("set-tier")
@click.argument("email")
@click.argument("tier")
def set_tier(email: str, tier: str):
    """Move ACCOUNT (by email) to TIER (sandbox, pro or enterprise; any case)."""
    account = _account(email)
    _apply(accounts.set_tier, account, tier)
    t = tiers.get(account.tier)
    click.echo(f"{account.email} is now on {t.label} ({t.quota_label}, {t.burst_per_second}/s burst).")


@accounts_cli.command("create")
@click.argument("email")
@click.password_option()
def create(email: str, password: str):
    """Create an account; an operator vouches for EMAIL, so it counts as confirmed."""
    account = _apply(accounts.create, email, password)
    click.echo(f"Created account {account.id} for {account.email}.")


@accounts_cli.command("confirm")
@click.argument("emails", nargs=-1, required=True)
def confirm(emails: tuple[str, ...]):
    """Mark each of EMAILS confirmed without its link (an operator who has checked the address)."""
    for email in emails:
        account = _account(email)
        changed = accounts.confirm(account)
        click.echo(f"{account.email} is confirmed." if changed else f"{account.email} was already confirmed.")


@accounts_cli.command("grant-role")
@click.argument("email")
@click.argument("role")
def grant_role(email: str, role: str):
    """Give ROLE (ops: /developer/ops) to the confirmed account EMAIL."""
    account = _account(email)
    _apply(accounts.grant_role, account, role)
    click.echo(f"{account.email} now has the role {role}.")


@accounts_cli.command("revoke-role")
@click.argument("email")
@click.argument("role")
def revoke_role(email: str, role: str):
    """Take ROLE away from EMAIL; it applies to the account's next request."""
    account = _account(email)
    removed = accounts.revoke_role(account, role)
    click.echo(
        f"{account.email} no longer has the role {role}." if removed else f"{account.email} did not have {role}."
    )
