"""job_state_counts kept by triggers; indexes for the ops figures and the usage card's SUM

The operator's page and /metrics showed jobs by status with a GROUP BY over every stored job, and
their 24 h figures scanned every finished job: both grew with the table. The counts are now kept
by the database itself on every insert, status change, delete and truncate of `jobs` (so every
path that writes jobs, the worker's, the API's, the purge and account deletion alike, keeps them
exact), in 16 shards per status on PostgreSQL so concurrent transitions rarely wait on one row;
the 24 h figures read a range of the new (finished_at, status) index, and the status index keeps
only jobs in flight (a plan over finished jobs read all of them through it). The usage card's
period SUM reads a range of (account_id, day) instead of every row of the account.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

SHARDS = 16  # levqor_core.apijobs.models.STATE_COUNT_SHARDS

POSTGRES_FUNCTIONS = f"""
CREATE FUNCTION jobs_state_count(status varchar, shard integer, delta integer) RETURNS void AS $$
    INSERT INTO job_state_counts (status, shard, n) VALUES (status, shard, delta)
    ON CONFLICT ON CONSTRAINT pk_job_state_counts DO UPDATE SET n = job_state_counts.n + EXCLUDED.n
$$ LANGUAGE sql;

CREATE FUNCTION jobs_count_states() RETURNS trigger AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM jobs_state_count(OLD.status, (OLD.seq % {SHARDS})::integer, -1);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM jobs_state_count(NEW.status, (NEW.seq % {SHARDS})::integer, 1);
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql;

CREATE FUNCTION jobs_truncate_counts() RETURNS trigger AS $$
BEGIN
    DELETE FROM job_state_counts;
    RETURN NULL;
END $$ LANGUAGE plpgsql;
"""

POSTGRES_TRIGGERS = [
    "CREATE TRIGGER jobs_count_insert_delete AFTER INSERT OR DELETE ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION jobs_count_states()",
    "CREATE TRIGGER jobs_count_status AFTER UPDATE OF status ON jobs "
    "FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION jobs_count_states()",
    "CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION jobs_truncate_counts()",
]


def _sqlite_add(status: str, delta: str) -> str:
    return (
        f"INSERT INTO job_state_counts (status, shard, n) VALUES ({status}, 0, {delta}) "
        f"ON CONFLICT (status, shard) DO UPDATE SET n = n + excluded.n;"
    )


# SQLite (the embedded default) serialises writers anyway: one shard. It has no TRUNCATE.
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN {_sqlite_add('NEW.status', '1')} END",
    f"CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN {_sqlite_add('OLD.status', '-1')} END",
    "CREATE TRIGGER jobs_count_status AFTER UPDATE OF status ON jobs WHEN OLD.status IS NOT NEW.status BEGIN "
    f"{_sqlite_add('OLD.status', '-1')} {_sqlite_add('NEW.status', '1')} END",
]


def upgrade():
    op.create_table(
        "job_state_counts",
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("status", "shard", name="pk_job_state_counts"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(POSTGRES_FUNCTIONS)
        # The counts and the triggers in one transaction with the table locked: no transition is
        # missed or counted twice between the backfill and the triggers.
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
        for trigger in POSTGRES_TRIGGERS:
            op.execute(trigger)
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
    shard = f"(seq % {SHARDS})" if postgres else "0"
    op.execute(
        f"INSERT INTO job_state_counts (status, shard, n) SELECT status, {shard}, count(*) FROM jobs GROUP BY 1, 2"
    )
    op.create_index("ix_jobs_finished_at_status", "jobs", ["finished_at", "status"])
    in_flight = sa.text("status IN ('queued', 'running')")
    op.create_index("ix_jobs_status_in_flight", "jobs", ["status"], postgresql_where=in_flight, sqlite_where=in_flight)
    op.drop_index("ix_jobs_status", table_name="jobs")
    with op.batch_alter_table("usage_daily") as batch_op:
        batch_op.create_index("ix_usage_daily_account_id_day", ["account_id", "day"])
        batch_op.drop_index("ix_usage_daily_account_id")


def downgrade():
    with op.batch_alter_table("usage_daily") as batch_op:
        batch_op.create_index("ix_usage_daily_account_id", ["account_id"])
        batch_op.drop_index("ix_usage_daily_account_id_day")
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.drop_index("ix_jobs_status_in_flight", table_name="jobs")
    op.drop_index("ix_jobs_finished_at_status", table_name="jobs")
    if op.get_bind().dialect.name == "postgresql":
        for name in ("jobs_count_insert_delete", "jobs_count_status", "jobs_count_truncate"):
            op.execute(f"DROP TRIGGER {name} ON jobs")
        op.execute("DROP FUNCTION jobs_count_states(), jobs_truncate_counts(), jobs_state_count(varchar, integer, integer)")
    else:
        for name in ("jobs_count_insert", "jobs_count_delete", "jobs_count_status"):
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("job_state_counts")
