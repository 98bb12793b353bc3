"""The operator commands of every domain, registered on the app: `flask accounts|usage|jobs|billing|secrets ...`."""

from flask import Flask

from levqor_core.accounts.cli import accounts_cli
from levqor_core.billing.cli import billing_cli
from levqor_core.metering.cli import usage_cli
from levqor_core.ops.cli import jobs_cli, secrets_cli


def register(app: Flask) -> None:
    for group in (accounts_cli, usage_cli, jobs_cli, billing_cli, secrets_cli):
        app.cli.add_command(group)
