"""The usage flush at scale: every pending (key, day) pair reaches usage_daily, however many."""

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily

KEYS = 20_000  # 100,000 parameters in one statement: past PostgreSQL's 65,535


def _accounts(app, n: int) -> list[int]:
    """n accounts inserted in bulk (one key each below); the flush keeps only live accounts' rows."""
    with app.app_context():
        emails = [f"scale-{uuid.uuid4().hex}@example.com" for _ in range(n)]
        db.session.execute(
            sa.insert(Account),
            [{"email": e, "password_hash": "x", "fs_uniquifier": uuid.uuid4().hex} for e in emails],
        )
        db.session.commit()
        return list(db.session.scalars(sa.select(Account.id).order_by(Account.id)))


def _count_calls(r, account_ids: list[int], calls_each: int, sandbox_each: int) -> dict[str, int]:
    """What gate.lua does for these calls, one key per account; returns key id → its account."""
    day = datetime.now(UTC).date()
    period = metering.calendar_period(datetime.now(UTC)).id
    owners = {}
    pipe = r.pipeline(transaction=False)
    for account_id in account_ids:
        key_id = uuid.uuid4().hex
        owners[key_id] = account_id
        metering.add_calls(pipe, key_id, account_id, period, day, "v1", calls_each)
        if sandbox_each:
            metering.add_calls(pipe, key_id, account_id, period, day, "sandbox", sandbox_each)
    pipe.execute()
    return owners


def _persisted(app) -> dict[str, tuple[int, int, int]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(UsageDaily.key_id, UsageDaily.account_id, UsageDaily.calls, UsageDaily.sandbox_calls)
        )
        return {row.key_id: (row.account_id, row.calls, row.sandbox_calls) for row in rows}


def test_twenty_thousand_keys_touched_in_one_window_are_all_persisted(app):
    r = app.extensions["levqor.redis"]
    owners = _count_calls(r, _accounts(app, KEYS), calls_each=3, sandbox_each=1)
    with app.app_context():
        assert metering.flush_usage(r) == KEYS
    persisted = _persisted(app)
    assert persisted == {key_id: (account_id, 3, 1) for key_id, account_id in owners.items()}
    assert metering.pending_pairs(r) == 0
    with app.app_context():
        assert metering.flush_usage(r) == 0  # nothing pending is left behind


@pytest.fixture
def postgres_outage(postgres_server):
    """Stops the suite's PostgreSQL; always starts it again (same data), even if the test fails."""
    yield postgres_server.stop
    if postgres_server.proc is None:
        postgres_server.resume()


def test_a_backlog_piled_up_while_postgresql_was_down_is_persisted_once_it_is_back(
    app, postgres_server, postgres_outage
):
    r = app.extensions["levqor.redis"]
    account_ids = _accounts(app, KEYS)
    first = _count_calls(r, account_ids[: KEYS // 2], calls_each=1, sandbox_each=0)
    postgres_outage()
    for _ in range(3):  # ticks while the database is away: each fails, nothing is dropped
        with app.app_context(), pytest.raises(sa.exc.OperationalError):
            metering.flush_usage(r)
    second = _count_calls(r, account_ids[KEYS // 2 :], calls_each=2, sandbox_each=0)
    assert metering.pending_pairs(r) == KEYS
    postgres_server.resume()
    with app.app_context():
        assert metering.flush_usage(r) == KEYS
    expected = {k: (a, 1, 0) for k, a in first.items()} | {k: (a, 2, 0) for k, a in second.items()}
    assert _persisted(app) == expected


def test_a_chunk_that_fails_midway_keeps_only_what_was_not_written(app, monkeypatch):
    r = app.extensions["levqor.redis"]
    owners = _count_calls(r, _accounts(app, 5), calls_each=1, sandbox_each=0)
    monkeypatch.setattr(metering, "FLUSH_CHUNK_ROWS", 2)
    real_upsert = metering._upsert_usage
    calls = []

    def upsert_failing_on_the_second_chunk(rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        real_upsert(rows)

    monkeypatch.setattr(metering, "_upsert_usage", upsert_failing_on_the_second_chunk)
    with app.app_context(), pytest.raises(sa.exc.OperationalError):
        metering.flush_usage(r)
    assert len(_persisted(app)) == 2 and metering.pending_pairs(r) == 3
    with app.app_context():
        assert metering.flush_usage(r) == 3
    assert set(_persisted(app)) == set(owners)
