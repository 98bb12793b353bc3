"""Deleting an account (docs: what goes, what stays and why), through steps each domain registers.

The accounts package knows no other domain: each one that keeps something of an account registers
the step that removes it (`@deletion.step(...)`, in its own module) and names the tables it clears.
Before anything changes, `delete` checks that every table with an `account_id` column is claimed by
a registered step, so a new domain that forgets to register refuses deletions instead of leaving
personal rows behind (SQLite, the embedded default, enforces no ON DELETE rules).

Order matters, by the steps' `order`: Stripe first (a failure there stops before anything is lost,
and nobody is charged for an account that no longer exists: BILLING), then the keys (the next call
is a 401 in every process: KEYS), then what lives in Redis (CACHES), then the rows (ROWS), then the
account itself. Its usage counters still in Redis are not flushed: the flusher drops the counters
of deleted accounts.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from levqor_core.accounts.models import Account, SignIn
from levqor_core.extensions import db

log = logging.getLogger(__name__)

BILLING, KEYS, CACHES, ROWS = 10, 20, 30, 40


@dataclass(frozen=True)
class Step:
    name: str
    order: int
    run: Callable[[Account, object], None]  # (account, actor): the actor as keys.Actor
    tables: tuple[str, ...]  # the tables with an account_id column it clears (or keeps, unlinked)


_steps: dict[str, Step] = {}


def step(name: str, order: int, tables: tuple[str, ...] = ()) -> Callable:
    """Register `run(account, actor)` as a deletion step (once per name: a reload replaces it)."""

    def register(run: Callable[[Account, object], None]) -> Callable:
        _steps[name] = Step(name, order, run, tables)
        return run

    return register


def steps() -> list[Step]:
    return sorted(_steps.values(), key=lambda s: (s.order, s.name))


def unclaimed_tables() -> set[str]:
    """Tables naming an account that no registered step clears."""
    claimed = {table for s in _steps.values() for table in s.tables}
    naming = {t.name for t in db.metadata.sorted_tables if "account_id" in t.c and t.name != "account_roles"}
    return naming - claimed


class UnclaimedTables(RuntimeError):
    """A table keeps account rows that no deletion step removes: deleting would leave them."""


def delete(account: Account, actor) -> None:
    """Delete the account and everything personal it owns. A billing error is raised before anything
    of ours changes (open checkouts may already have been expired: harmless, a new one can be started)."""
    if missing := unclaimed_tables():
        raise UnclaimedTables(f"no deletion step clears {', '.join(sorted(missing))}")
    account_id = account.id
    for each in steps():
        each.run(account, actor)
    db.session.delete(account)
    db.session.commit()
    log.info("account %s deleted", account_id)


@step("sign-ins", ROWS, tables=("sign_ins",))
def _delete_sign_ins(account: Account, _actor) -> None:
    db.session.execute(sa.delete(SignIn).where(SignIn.account_id == account.id))
