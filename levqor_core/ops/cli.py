"""`flask jobs ...`: run a periodic job now (with a progress bar), queue it, or show the schedule."""

import json

import click
from flask.cli import AppGroup

from levqor_core.ops import periodic

jobs_cli = AppGroup("jobs", help="Background jobs: Notion sync, quota alerts, health log.")
secrets_cli = AppGroup("secrets", help="After a SECRET_KEY rotation.")


@secrets_cli.command("re-encrypt")
def re_encrypt():
    """Rewrite webhook secrets, recovery codes and TOTP secrets under the current key, so the old
    value can leave SECRET_KEY_FALLBACKS or RETIRED_SECRET_KEYS."""
    from levqor_core.ops.secret_rotation import re_encrypt_all

    done = re_encrypt_all()
    click.echo(
        f"re-encrypted {done.webhook_secrets} webhook secret(s), the recovery codes of "
        f"{done.accounts_with_recovery_codes} account(s) and {done.totp_secrets} two-factor secret(s)"
    )
    if done.unreadable:
        raise click.ClickException(
            f"{done.unreadable} could not be read with the configured keys and were left as they are: keep "
            "the old values configured until that is resolved"
        )


@jobs_cli.command("run")
@click.argument("name", type=click.Choice(sorted(periodic.PERIODIC_JOBS)))
@click.option("--day", help="health-log only: the UTC day to summarise (YYYY-MM-DD; default yesterday).")
def run(name: str, day: str | None):
    """Run job NAME now in this process, showing its progress."""
    kwargs = {"day": day} if day and name == "health-log" else {}
    with click.progressbar(length=1, label=name, show_pos=True) as bar:

        def progress(done: int, total: int, counts: dict) -> None:
            bar.length = max(total, 1)
            bar.update(done - bar.pos)

        try:
            result = periodic.run(name, progress=progress, **kwargs)
        except Exception as err:
            raise click.ClickException(f"{name} failed: {err}") from None
    click.echo(json.dumps(result, indent=2, default=str))


@jobs_cli.command("enqueue")
@click.argument("name", type=click.Choice(sorted(periodic.PERIODIC_JOBS)))
def enqueue(name: str):
    """Queue job NAME for the worker."""
    click.echo(f"Queued {name} as RQ job {periodic.enqueue(name)}.")


@jobs_cli.command("schedule")
def schedule():
    """Show when the worker runs each job (from the JOBS_*_CRON settings)."""
    for name, cron in periodic.schedule().items():
        click.echo(f"{name:14} {cron or 'disabled'}")
