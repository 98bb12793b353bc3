"""The job poll (GET /api/v1/jobs/{job_id}) reads what the worker last wrote: never an older status.

A watcher reads the job's row on its own PostgreSQL connection while the real worker process runs
the job; every time it sees a status committed, the next poll must say that status (or a later
one). Queued → running → succeeded, failed, and canceled while running.
"""

import subprocess
import sys

import pytest
import sqlalchemy as sa

from levqor_core import config
from levqor_core.apijobs.models import Job
from levqor_core.columns import utcnow
from levqor_core.extensions import db

from .helpers import ROOT, wait_for, worker_env

# A status is never followed by an earlier one; the finished ones are final.
RANK = {"queued": 0, "running": 1, "succeeded": 2, "failed": 2, "canceled": 2}


@pytest.fixture
def api(client, make_account):
    # Enterprise: its burst (250 calls a second) stays above the polls' pace.
    account_id, raw = make_account(tier="enterprise")

    def call(method, path, **kwargs):
        return client.request(method, "/api" + path, headers={"x-api-key": raw}, **kwargs)

    return call


@pytest.fixture
def watcher(database_url):
    """The job's status as committed, read on a connection of its own (not the app's pool)."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.NullPool)
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def committed_status(job_id: str) -> str:
        return connection.execute(sa.text("SELECT status FROM jobs WHERE id = :id"), {"id": job_id}).scalar_one()

    yield committed_status
    connection.close()
    engine.dispose()


@pytest.fixture
def worker(database_url, redis_server):
    """The real worker process, in burst mode, started in the background."""
    started = []

    def start() -> subprocess.Popen:
        env = worker_env(database_url, redis_server.url)
        started.append(subprocess.Popen([sys.executable, "-m", "jobs.worker", "--burst"], cwd=ROOT, env=env))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def follow(api, committed_status, job_id: str, until: set[str], on_status=None, timeout: float = 60) -> list[str]:
    """Watch the committed status until it is one of `until`; after each read, poll the API and
    check the poll is not older. Returns the committed statuses seen, in order, without repeats."""
    seen: list[str] = []

    def step():
        committed = committed_status(job_id)
        response = api("GET", f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        polled = response.json()
        assert RANK[polled["status"]] >= RANK[committed], (committed, polled)
        if RANK[committed] == 2:
            assert polled["status"] == committed, (committed, polled)  # a finished job never changes
        if not seen or seen[-1] != committed:
            seen.append(committed)
            if on_status:
                on_status(committed)
        return committed in until

    wait_for(step, timeout, step=0.02, what=f"{job_id} reaching {until}")
    return seen


def test_the_poll_after_each_status_the_worker_commits_says_that_status(api, watcher, worker):
    job = api("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 1}}).json()
    process = worker()
    seen = follow(api, watcher, job["id"], {"succeeded"})
    assert seen == ["queued", "running", "succeeded"]
    done = api("GET", f"/v1/jobs/{job['id']}").json()
    assert done["result"] is not None and done["finished_at"] >= done["started_at"]
    assert process.wait(timeout=60) == 0


def test_the_poll_after_a_failure_is_committed_says_failed(api, watcher, worker):
    document = {"blob": "y" * 5000}
    mapping = {f"copy{i}": "blob" for i in range(60)}  # a 300 KB result: too large to store
    body = {"workflow": "json-transform", "input": {"document": document, "mapping": mapping}}
    job = api("POST", "/v1/jobs", json=body).json()
    process = worker()
    assert follow(api, watcher, job["id"], {"failed"})[-1] == "failed"
    failed = api("GET", f"/v1/jobs/{job['id']}").json()
    assert failed["error"]["type"] == "ResultTooLarge" and failed["result"] is None
    assert process.wait(timeout=60) == 0


def test_the_poll_after_a_cancel_of_a_running_job_says_canceled_and_stays_so(api, watcher, worker):
    job = api("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 3}}).json()
    process = worker()

    def cancel_once_running(status: str) -> None:
        if status == "running":
            assert api("POST", f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"

    seen = follow(api, watcher, job["id"], {"canceled"}, on_status=cancel_once_running)
    assert seen == ["queued", "running", "canceled"]
    assert process.wait(timeout=60) == 0  # the worker, stopped or done, did not write over the cancel
    final = api("GET", f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled" and final["result"] is None


def _poll_engine(app):
    with app.app_context():
        return db.engines[config.JOB_POLL_BIND]


def test_a_poll_reads_on_the_poll_pool_once_and_then_touches_no_pool(api, app):
    """The first poll reads one statement on the poll's own pool (the main pool, its pre-ping, BEGIN
    and ROLLBACK, is not used) and holds its answer in Redis; the polls after it run no SQL at all
    (gate.lua reads the answer in its round trip: levqor_core.apijobs.poll_cache)."""
    job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"text": "hi"}}).json()
    with app.app_context():
        main = db.engine
    checkouts = {"main": 0, "poll": 0}
    listeners = [
        (main.pool, "checkout", lambda *_: checkouts.__setitem__("main", checkouts["main"] + 1)),
        (_poll_engine(app).pool, "checkout", lambda *_: checkouts.__setitem__("poll", checkouts["poll"] + 1)),
    ]
    for target, name, listener in listeners:
        sa.event.listen(target, name, listener)
    try:
        first = api("GET", f"/v1/jobs/{job['id']}")
        after_first = dict(checkouts)
        then = [api("GET", f"/v1/jobs/{job['id']}") for _ in range(3)]
    finally:
        for target, name, listener in listeners:
            sa.event.remove(target, name, listener)
    assert first.status_code == 200 and first.json()["id"] == job["id"]
    assert after_first == {"main": 0, "poll": 1}
    assert checkouts == {"main": 0, "poll": 1}
    assert [p.content for p in then] == [first.content] * 3


def test_a_poll_after_the_server_dropped_the_poll_pools_connections_reads_on_new_ones(api, app, database_url, caplog):
    """The poll pool pings no connection on checkout: one the server closed while it idled (a
    restart, a failover, a pooler's idle timeout) fails on use, and the poll reads again on a new
    one, the other idle ones discarded with it. A 200, not a 500."""
    job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"text": "hi"}}).json()
    engine = _poll_engine(app)
    held = [engine.raw_connection() for _ in range(3)]  # three connections idle in the pool
    for connection in held:
        connection.close()
    assert engine.pool.checkedin() >= 3
    admin = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=sa.NullPool)
    with admin.connect() as connection:
        dropped = connection.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    admin.dispose()
    assert dropped >= 3
    with caplog.at_level("WARNING", logger="levqor_core.apijobs.jobs"):
        polls = [api("GET", f"/v1/jobs/{job['id']}") for _ in range(3)]
    assert [p.status_code for p in polls] == [200, 200, 200], polls[0].text
    assert {p.json()["status"] for p in polls} <= {"queued", "running", "succeeded"}
    assert sum("dropped a pooled connection" in r.getMessage() for r in caplog.records) == 1


def test_the_poll_answers_what_the_orm_shows(api, app):
    """The poll's plain cursor renders a job exactly as the Job model does (timestamps, JSON, nulls)."""
    body = {"workflow": "json-transform", "input": {"document": {"a": [1, 2.5, None, "é"]}, "mapping": {"b": "a"}}}
    job = api("POST", "/v1/jobs", json=body).json()
    with app.app_context():
        db.session.execute(
            sa.update(Job)
            .where(Job.id == job["id"])
            .values(status="succeeded", result={"b": [1, 2.5, None, "é"]}, started_at=utcnow(), finished_at=utcnow())
        )
        db.session.commit()
        shown = db.session.scalar(sa.select(Job).where(Job.id == job["id"])).to_dict()
    assert api("GET", f"/v1/jobs/{job['id']}").json() == shown
