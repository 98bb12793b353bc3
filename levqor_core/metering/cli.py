"""Operator commands: `flask usage ...`."""

import click
from flask import current_app
from flask.cli import AppGroup

from levqor_core.metering import counters as metering

usage_cli = AppGroup("usage", help="Usage counters.")


@usage_cli.command("flush")
def flush():
    """Persist the Redis usage counters to the database now."""
    rows = metering.flush_usage(current_app.extensions["levqor.redis"])
    click.echo(f"Persisted {rows} usage row(s).")
