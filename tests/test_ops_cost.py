"""The operator's job figures cost the same however many jobs are stored: the states are counted
by triggers as jobs change (exact through every way jobs are written), and the 24 h figures read
the window's range of the finished_at index. Rows read are counted by EXPLAIN ANALYZE."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from levqor_core.apijobs import jobs as job_core
from levqor_core.apijobs.models import Job, JobStateCount, new_job_id
from levqor_core.extensions import db
from levqor_core.ops import status as ops_status


@pytest.fixture(autouse=True)
def _fresh_ops_figures():
    ops_status.DB_FIGURES.clear()


def by_group_by() -> dict:
    counted = dict(db.session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status)).all())
    return {state: int(counted.get(state, 0)) for state in ops_status.JOB_STATES}


def add_jobs(account_id: int, n: int, status: str, finished_ago: timedelta | None) -> None:
    """n jobs in one statement (generate_series), finished `finished_ago` before now if given."""
    now = datetime.now(UTC)
    finished = None if finished_ago is None else now - finished_ago
    started = None if finished is None else finished - timedelta(seconds=1)
    db.session.execute(
        sa.text(
            "INSERT INTO jobs (id, account_id, workflow, input, status, created_at, started_at, finished_at) "
            "SELECT 'job_' || left(md5(random()::text || i), 20), :account, 'echo', '{}', :status, :created, "
            ":started, :finished "
            "FROM generate_series(1, :n) AS i"
        ),
        {
            "account": account_id,
            "status": status,
            "n": n,
            "created": started or now,
            "started": started,
            "finished": finished,
        },
    )
    db.session.commit()


def rows_read(plan: dict) -> int:
    """Rows the plan's scans read: returned plus removed by a filter, over every loop."""
    read = 0
    if "Scan" in plan["Node Type"]:
        removed = plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
        read += (plan["Actual Rows"] + removed) * plan["Actual Loops"]
    return read + sum(rows_read(child) for child in plan.get("Plans", []))


def analyze_jobs() -> None:
    """Fresh planner statistics for `jobs`, committed: ANALYZE's pg_statistic rows are
    transactional, and cost_of_figures rolls back before its EXPLAINs, which then planned with
    whatever statistics autovacuum had left (a whole-table scan now and then: a flaky count)."""
    db.session.execute(sa.text("ANALYZE jobs"))
    db.session.commit()


def cost_of_figures() -> tuple[int, int, dict]:
    """(statements, rows read, figures) of one computation of the operator's database figures."""
    statements = []
    engine = db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        figures = ops_status.compute_db_figures(db.session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    db.session.rollback()
    cursor = db.session.connection().connection.cursor()
    total = 0
    for statement, parameters in statements:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
        plan = cursor.fetchone()[0][0]["Plan"]
        total += rows_read(plan)
    db.session.rollback()
    return len(statements), total, figures


def test_the_job_figures_read_the_same_rows_with_100_or_10000_old_jobs(app, make_account):
    account_id, _ = make_account(tier="enterprise")
    with app.app_context():
        add_jobs(account_id, 20, "succeeded", timedelta(hours=2))  # the last 24 h
        add_jobs(account_id, 5, "failed", timedelta(hours=3))
        add_jobs(account_id, 3, "queued", None)
        add_jobs(account_id, 100, "succeeded", timedelta(days=3))  # old
        analyze_jobs()
        small_statements, small_rows, small = cost_of_figures()

        add_jobs(account_id, 9_900, "succeeded", timedelta(days=3))
        analyze_jobs()
        large_statements, large_rows, large = cost_of_figures()

    assert large["jobs_by_state"] == {"queued": 3, "running": 0, "succeeded": 10_020, "failed": 5, "canceled": 0}
    assert small["last_24h"] == large["last_24h"] and large["last_24h"]["finished"] == 25
    assert large_statements == small_statements
    assert large_rows <= small_rows, (small_rows, large_rows)
    assert large_rows < 1_000  # of 10,028 jobs stored


def test_the_state_counts_stay_exact_through_every_way_jobs_are_written(app, make_account, redis_server):
    account_id, _ = make_account(tier="enterprise")
    other_id, _ = make_account(tier="enterprise")
    with app.app_context():
        created = [job_core.create(account_id, "echo", {"i": i})[0].id for i in range(4)]
        job_core.create(other_id, "echo", {"other": True})
        job_core.cancel(account_id, created[0])
        assert job_core.execute(created[1]) == "succeeded"
        db.session.execute(sa.update(Job).where(Job.id == created[2]).values(status="running"))
        db.session.commit()
        add_jobs(account_id, 7, "failed", timedelta(days=40))
        db.session.rollback()
        # A transaction that rolls back leaves the counts as they were.
        db.session.add(Job(id=new_job_id(), account_id=account_id, workflow="echo", input={}, status="queued"))
        db.session.flush()
        db.session.rollback()
        assert job_core.purge_finished(datetime.now(UTC), timedelta(days=30)) == 7
        expected = by_group_by()
        assert expected == {"queued": 2, "running": 1, "succeeded": 1, "failed": 0, "canceled": 1}
        assert ops_status.compute_db_figures(db.session)["jobs_by_state"] == expected

        db.session.execute(sa.delete(Job).where(Job.account_id == other_id))  # as account deletion does
        db.session.commit()
        assert ops_status.compute_db_figures(db.session)["jobs_by_state"] == by_group_by()
        db.session.execute(sa.text("TRUNCATE jobs"))
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(JobStateCount)) == 0
