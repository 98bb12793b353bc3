"""Operator commands: `flask usage ...`."""

import click
from flask.cli import AppGroup

from levqor_core import redis_conn
from levqor_core.metering import counters as metering

usage_cli = AppGroup("usage", help="Usage counters.")


@usage_cli.command("flush")
def flush():
    """Persist the Redis usage counters to the database now."""
    rows = metering.flush_usage(redis_conn.for_limits())
    click.echo(f"Persisted {rows} usage row(s).")
