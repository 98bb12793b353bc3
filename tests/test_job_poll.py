"""The job poll (GET /api/v1/jobs/{job_id}) reads what the worker last wrote: never an older status.

A watcher reads the job's row on its own PostgreSQL connection while the real worker process runs
the job; every time it sees a status committed, the next poll must say that status (or a later
one). Queued → running → succeeded, failed, and canceled while running.
"""

import subprocess
import sys

import pytest
import sqlalchemy as sa

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
