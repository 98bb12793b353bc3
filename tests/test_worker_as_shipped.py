"""The worker as the Procfile and `make run` start it: long-lived, fair, bounded.

These run the real processes (not `--burst`) on the real PostgreSQL and Redis, idle for longer
than a burst, through a Redis restart and a killed worker.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
import sqlalchemy as sa
from rq import Queue, Worker
from rq.job import Job as RQJob

from jobs.worker import PERIODIC_WORKERS, WEBHOOK_WORKERS
from levqor_core.apijobs import jobs as job_core
from levqor_core.apijobs import sandbox
from levqor_core.apijobs.models import Job
from levqor_core.extensions import db
from levqor_core.ops import periodic
from levqor_core.queue import API_QUEUE, PERIODIC_QUEUE
from levqor_core.tiers import TIERS

from . import signup
from .helpers import (
    procfile,
    run_worker_burst,
    shipped_env,
    start_procfile_line,
    stop_procfile_line,
    wait_for,
    web_is_up,
    worker_env,
)
from .servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
IDLE_SECONDS = 15


def run_echo(api: httpx.Client, marker: str, timeout: float = 30) -> dict:
    created = api.post("/api/v1/jobs", json={"workflow": "echo", "input": {"marker": marker}})
    assert created.status_code == 202, created.text

    def finished():
        job = api.get(f"/api/v1/jobs/{created.json()['id']}").json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    job = wait_for(finished, timeout, step=0.3, what=f"job {marker} finishing")
    assert job["status"] == "succeeded" and job["result"] == {"marker": marker}
    return job


def test_the_procfile_processes_stay_up_idle_and_through_a_redis_restart(postgres_server, tmp_path):
    processes = procfile()
    assert set(processes) >= {"release", "web", "worker"}
    redis = RedisServer().start()  # its own: this test restarts it
    port = free_port()
    env = shipped_env(postgres_server.create_database(f"shipped_{uuid.uuid4().hex[:8]}"), redis.url, port, tmp_path)
    base = f"http://127.0.0.1:{port}"
    release = subprocess.run(["bash", "-c", processes["release"]], cwd=ROOT, env=env, capture_output=True, text=True)
    assert release.returncode == 0, release.stderr[-2000:]
    web, worker = start_procfile_line(processes["web"], env), start_procfile_line(processes["worker"], env)
    try:
        wait_for(lambda: web_is_up(base), 60, what="the web process answering")
        email = f"shipped-{uuid.uuid4().hex[:8]}@example.com"
        key = signup.developer_with_key(base, email, lambda web, email: signup.confirm_with_cli(env, email))
        with httpx.Client(base_url=base, timeout=10, headers={"x-api-key": key}) as api:
            run_echo(api, "before-idle")
            time.sleep(IDLE_SECONDS)  # longer than any socket timeout the worker had
            assert worker.poll() is None, "the worker exited while idle"
            run_echo(api, "after-idle")

            redis.stop()
            time.sleep(3)
            redis.start()
            time.sleep(3)
            assert worker.poll() is None, "the worker exited when Redis restarted"
            run_echo(api, "after-redis-restart", timeout=60)
            # It registered itself again, so operators and dashboards still see it.
            connection = redis_client(redis.url)
            wait_for(lambda: len(Worker.all(connection=connection)) >= 2, 30, what="workers registered again")
    finally:
        stop_procfile_line(worker)
        stop_procfile_line(web)
        redis.close()


def redis_client(url: str):
    import redis as redis_py

    return redis_py.Redis.from_url(url)


def test_make_run_restarts_a_dead_worker_and_keeps_running_jobs(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"PORT": str(port), "LEVQOR_VAR_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    # `make run` is `setup` followed by exactly this command (see the Makefile).
    make_run = re.search(r"^run: setup\n\t\$\(PY\) (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    # Its stderr goes to a file: an undrained pipe fills up and blocks every process writing logs.
    stderr_log = tmp_path / "stderr.log"
    server = subprocess.Popen([sys.executable, *shlex.split(make_run)], cwd=ROOT, env=env, stderr=stderr_log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: web_is_up(base), 60, what="make run answering")
        # No SMTP under `make run`: the confirmation mail, link included, is on its console.
        key = signup.developer_with_key(
            base, "embedded@example.com", lambda web, email: web.get(signup.link_from_console(stderr_log, email))
        )
        with httpx.Client(base_url=base, timeout=10, headers={"x-api-key": key}) as api:
            run_echo(api, "embedded-first")
            time.sleep(IDLE_SECONDS)
            workers = [p for p in psutil.Process(server.pid).children() if "jobs.worker" in " ".join(p.cmdline())]
            assert len(workers) == 1, "the worker exited while idle"
            run_echo(api, "embedded-after-idle")

            # A worker killed outright (as the OOM killer would) is started again.
            for process in [workers[0], *workers[0].children(recursive=True)]:
                process.kill()

            def restarted_pool():
                # A job pushed while a dying worker's blocking pop is still open on Redis goes to
                # that worker, and waits for RQ's intermediate-queue cleanup; so wait for the new pool.
                try:
                    alive = [p for p in psutil.Process(server.pid).children() if "jobs.worker" in " ".join(p.cmdline())]
                    new = [p for p in alive if p.pid != workers[0].pid]
                    return bool(new) and len(new[0].children()) >= 6
                except psutil.Error:  # the killed one, not reaped yet
                    return False

            wait_for(restarted_pool, 60, what="make run starting the worker again")
            time.sleep(2)  # the new workers register and block on their queues
            run_echo(api, "embedded-after-kill", timeout=60)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    assert server.returncode == 0
    stderr = stderr_log.read_text()
    assert "the worker exited with status" in stderr and "starting it again" in stderr


# -- one live worker pool on the suite's servers --------------------------------------------------


@pytest.fixture
def live_worker(app, database_url, redis_server):
    """`python -m jobs.worker` as shipped (no --burst), with `concurrency` API workers."""
    started = []

    def launch(concurrency: int, log: Path | None = None, **settings: str):
        env = (
            os.environ
            | settings
            | {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_server.url,
                "LOG_LEVEL": "WARNING",
                "WORKER_CONCURRENCY": str(concurrency),
                # The schedule is not under test here: no periodic job joins the queues by itself.
                **{
                    f"JOBS_{name}_CRON": ""
                    for name in ("NOTION_SYNC", "QUOTA_ALERTS", "HEALTH_LOG", "REQUEUE", "PURGE")
                },
                "JOBS_BILLING_DOWNGRADE_CRON": "",
            }
        )
        output = log.open("w") if log else None
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs.worker"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        started.append(process)
        r = app.extensions["levqor.redis"]
        wait_for(
            lambda: len(Worker.all(connection=r)) == concurrency + PERIODIC_WORKERS + WEBHOOK_WORKERS,
            60,
            what="the pool's workers registering",
        )
        return process

    yield launch
    for process in started:
        stop_procfile_line(process)


@pytest.fixture
def key_api(client, make_account):
    def make(tier: str = "sandbox"):
        account_id, raw = make_account(tier=tier)

        def call(method, path, **kwargs):
            return client.request(method, "/api" + path, headers={"x-api-key": raw}, **kwargs)

        call.account_id = account_id
        return call

    return make


def wait_status(api, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict:
    def reached():
        job = api("GET", f"/v1/jobs/{job_id}").json()
        return job if job["status"] in statuses else None

    return wait_for(reached, timeout, step=0.1, what=f"{job_id} reaching {statuses}")


def test_canceling_a_running_delay_job_frees_the_worker_within_a_second(app, live_worker, key_api, tmp_path):
    log = tmp_path / "worker.log"
    live_worker(concurrency=1, log=log)
    api = key_api("pro")
    job = api("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 6}}).json()
    wait_status(api, job["id"], ("running",))
    canceled_at = time.monotonic()  # the delay started before this: it would have ended by canceled_at + 6 s
    assert api("POST", f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"

    r = app.extensions["levqor.redis"]

    def worker_idle():
        (api_worker,) = Worker.all(connection=r, queue=Queue(API_QUEUE, connection=r))
        return api_worker.get_state() == "idle" and api_worker.get_current_job_id() is None

    wait_for(worker_idle, 5, step=0.05, what="the worker going idle")
    assert time.monotonic() - canceled_at < 1.0
    # The only API worker is free: the next job runs now, not when the delay would have ended.
    echo = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"next": 1}}).json()
    assert wait_status(api, echo["id"], ("succeeded",), timeout=3)["result"] == {"next": 1}
    stopped = RQJob.fetch(f"run-{job['id']}", connection=r)
    assert stopped.get_status() == "stopped"  # not retried
    # A cancel working is no error in the worker's log (RQ logged it as one, with a traceback).
    assert "ERROR" not in log.read_text(), log.read_text()[-3000:]
    # The stop ended the job, not its worker: the same process took the next job (no fork, no respawn).
    assert RQJob.fetch(f"run-{echo['id']}", connection=r).worker_name == stopped.worker_name

    time.sleep(max(0.0, canceled_at + 6.5 - time.monotonic()))  # past the end of the delay it would have slept
    final = api("GET", f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled" and final["result"] is None


def api_workers(r) -> list[Worker]:
    return Worker.all(connection=r, queue=Queue(API_QUEUE, connection=r))


def test_an_api_worker_runs_worker_max_jobs_jobs_then_the_pool_starts_a_fresh_one(app, live_worker, key_api):
    live_worker(concurrency=1, WORKER_MAX_JOBS="3")
    r = app.extensions["levqor.redis"]
    (first,) = api_workers(r)
    api = key_api("pro")
    ran_on = []
    for i in range(5):
        job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"i": i}}).json()
        assert wait_status(api, job["id"], ("succeeded",), timeout=15)["result"] == {"i": i}
        ran_on.append(RQJob.fetch(f"run-{job['id']}", connection=r).worker_name)
    # Three jobs in one process, which then exited; the pool started another for the next ones.
    assert ran_on[:3] == [first.name] * 3
    assert ran_on[3] == ran_on[4] != first.name
    assert first.name not in {w.name for w in api_workers(r)}


def test_a_job_over_its_timeout_fails_and_its_worker_goes_on(app, live_worker, make_account, key_api):
    live_worker(concurrency=1)
    r = app.extensions["levqor.redis"]
    account_id, _ = make_account("pro")
    job_id = job_core.new_job_id()
    with app.app_context():
        db.session.add(Job(id=job_id, account_id=account_id, workflow="delay", input={"seconds": 8}, status="queued"))
        db.session.commit()
    # The API's jobs get 90 s; this one 1 s, as RQ's death penalty would end a longer workflow.
    Queue(API_QUEUE, connection=r).enqueue(job_core.RUN_TASK, job_id, job_id=f"run-{job_id}", job_timeout=1)

    def finished():
        with app.app_context():
            job = job_core.read(account_id, job_id)
        return job if job["status"] != "running" and job["finished_at"] else None

    job = wait_for(finished, 6, step=0.1, what="the job ending at its timeout")
    assert job["status"] == "failed" and job["error"]["type"] == "JobTimeoutException"
    # The timeout hit the workflow, not a database write: the same worker runs the next job.
    api = key_api("pro")
    echo = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"after": "timeout"}}).json()
    assert wait_status(api, echo["id"], ("succeeded",), timeout=10)["result"] == {"after": "timeout"}
    worker_of = {RQJob.fetch(f"run-{i}", connection=r).worker_name for i in (job_id, echo["id"])}
    assert len(worker_of) == 1


def test_a_job_whose_api_worker_crashed_runs_again(app, live_worker, key_api):
    live_worker(concurrency=1)
    r = app.extensions["levqor.redis"]
    api = key_api("pro")
    job = api("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 3}}).json()
    wait_status(api, job["id"], ("running",))
    (crashed,) = api_workers(r)
    os.kill(crashed.pid, signal.SIGKILL)  # as the OOM killer would, in the middle of the job

    # The pool starts another API worker, and hands the job to RQ's abandoned-job handling at once.
    wait_for(lambda: [w for w in api_workers(r) if w.name != crashed.name], 15, what="a new API worker")
    assert crashed.name not in {w.name for w in Worker.all(connection=r)}
    rq_job = RQJob.fetch(f"run-{job['id']}", connection=r)
    wait_for(lambda: rq_job.get_status(refresh=True) != "started", 5, step=0.1, what="the job no longer started")
    assert api("GET", f"/v1/jobs/{job['id']}").json()["status"] == "running"  # until the requeue finds it

    with app.app_context():
        job_core.requeue_stranded(datetime.now(UTC) + timedelta(minutes=3))
    assert wait_status(api, job["id"], ("succeeded",), timeout=20)["result"] == {"slept_seconds": 3}


def test_an_account_at_its_in_flight_cap_gets_a_429_while_another_accounts_job_runs(live_worker, key_api):
    live_worker(concurrency=4)
    busy, other = key_api("sandbox"), key_api("sandbox")
    cap = TIERS["sandbox"].max_jobs_in_flight
    long_jobs = [
        api_job.json()
        for api_job in (
            busy("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 8}}) for _ in range(cap)
        )
    ]
    assert all(job["status"] == "queued" for job in long_jobs)

    refused = busy("POST", "/v1/jobs", json={"workflow": "echo", "input": {}})
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/too-many-jobs-in-flight") and problem["limit"] == cap
    assert int(refused.headers["Retry-After"]) >= 1

    started = time.monotonic()
    echo = other("POST", "/v1/jobs", json={"workflow": "echo", "input": {"fair": True}}).json()
    assert wait_status(other, echo["id"], ("succeeded",), timeout=5)["result"] == {"fair": True}
    assert time.monotonic() - started < 5  # it did not wait behind the long jobs

    # Canceling one frees a slot.
    busy("POST", f"/v1/jobs/{long_jobs[0]['id']}/cancel")
    assert busy("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).status_code == 202


def test_sandbox_delay_jobs_count_against_the_in_flight_cap(key_api):
    api = key_api("sandbox")
    cap = TIERS["sandbox"].max_jobs_in_flight
    running = [
        api("POST", "/sandbox/v1/jobs", json={"workflow": "delay", "input": {"seconds": 30}}).json() for _ in range(cap)
    ]
    assert all(job["status"] == "running" for job in running)
    refused = api("POST", "/sandbox/v1/jobs", json={"workflow": "delay", "input": {"seconds": 30}})
    assert refused.status_code == 429 and refused.json()["type"].endswith("/too-many-jobs-in-flight")
    # Jobs that finish at once are not in flight.
    assert api("POST", "/sandbox/v1/jobs", json={"workflow": "echo", "input": {}}).status_code == 202
    api("POST", f"/sandbox/v1/jobs/{running[0]['id']}/cancel")
    assert api("POST", "/sandbox/v1/jobs", json={"workflow": "delay", "input": {"seconds": 1}}).status_code == 202


def test_a_periodic_job_is_not_delayed_by_a_full_api_queue(app, live_worker, key_api):
    live_worker(concurrency=1)
    api = key_api("enterprise")
    backlog = [api("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 5}}).json() for _ in range(4)]
    wait_status(api, backlog[0]["id"], ("running",))
    r = app.extensions["levqor.redis"]
    assert Queue(API_QUEUE, connection=r).count == 3  # the API worker is busy and jobs wait

    with app.app_context():
        rq_id = periodic.enqueue("requeue-jobs")
    rq_job = RQJob.fetch(rq_id, connection=r)
    assert rq_job.origin == PERIODIC_QUEUE
    wait_for(lambda: rq_job.get_status(refresh=True) == "finished", 4, step=0.1, what="the periodic job finishing")
    # ...while the API backlog is still there: it did not wait its turn behind 20 s of delays.
    assert api("GET", f"/v1/jobs/{backlog[-1]['id']}").json()["status"] == "queued"


# -- retention and bounded storage ---------------------------------------------------------------


def test_retention_purges_finished_jobs_past_the_retention_and_nothing_else(app, make_account):
    account_id, _ = make_account()
    now = datetime.now(UTC)
    days = app.config["JOB_RETENTION_DAYS"]
    old, recent = now - timedelta(days=days, hours=1), now - timedelta(days=days - 1)
    rows = {
        "old-succeeded": ("succeeded", old),
        "old-failed": ("failed", old),
        "old-canceled": ("canceled", old),
        "recent-succeeded": ("succeeded", recent),
        "old-queued": ("queued", None),
        "old-running": ("running", None),
    }
    with app.app_context():
        for name, (status, finished) in rows.items():
            db.session.add(
                Job(
                    id=f"job_{uuid.uuid4().hex[:20]}",
                    account_id=account_id,
                    workflow="echo",
                    input={"name": name},
                    result={"name": name} if status == "succeeded" else None,
                    status=status,
                    created_at=old - timedelta(days=1),
                    finished_at=finished,
                )
            )
        db.session.commit()
        result = periodic.run("purge-jobs")
        left = {job.input["name"] for job in db.session.scalars(sa.select(Job))}
    assert result == {"purged": 3, "retention_days": days}
    assert left == {"recent-succeeded", "old-queued", "old-running"}


def test_purge_works_in_batches(app, make_account, monkeypatch):
    account_id, _ = make_account()
    monkeypatch.setattr(job_core, "PURGE_BATCH", 7)
    long_ago = datetime.now(UTC) - timedelta(days=400)
    with app.app_context():
        db.session.execute(
            sa.insert(Job),
            [
                {
                    "id": f"job_{uuid.uuid4().hex[:20]}",
                    "account_id": account_id,
                    "workflow": "echo",
                    "input": {},
                    "status": "succeeded",
                    "created_at": long_ago,
                    "finished_at": long_ago,
                }
                for _ in range(30)
            ],
        )
        db.session.commit()
        assert job_core.purge_finished(datetime.now(UTC), timedelta(days=30)) == 30
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Job)) == 0


def test_sandbox_storage_per_account_is_bounded(app, make_account, key_api):
    account_id, _ = make_account()
    r = app.extensions["levqor.redis"]
    near_cap = {"blob": "x" * (sandbox.MAX_INPUT_BYTES - 20)}
    with app.app_context():
        for i in range(sandbox.MAX_JOBS + 30):
            sandbox.create_job(r, account_id, "echo", near_cap | {"i": i})
    prefix = f"lvq:sbx:{{{account_id}}}:"
    keys = list(r.scan_iter(prefix + "*"))
    footprint = sum(r.memory_usage(k) for k in keys)
    job_keys = [k for k in keys if k.startswith((prefix + "job:").encode())]
    assert len(job_keys) == sandbox.MAX_JOBS and r.zcard(prefix + "index") == sandbox.MAX_JOBS
    # Input and result (echo returns its input) at the cap, as Redis counts them (allocator included).
    assert footprint < sandbox.MAX_JOBS * sandbox.MAX_BYTES_PER_JOB
    # The newest are the ones kept.
    with app.app_context():
        newest = sandbox.list_jobs(r, account_id, None, 1, None)["data"][0]
    assert newest["input"]["i"] == sandbox.MAX_JOBS + 29

    api = key_api()
    too_big = api(
        "POST", "/sandbox/v1/jobs", json={"workflow": "echo", "input": {"blob": "x" * sandbox.MAX_INPUT_BYTES}}
    )
    assert too_big.status_code == 413 and too_big.json()["type"].endswith("/payload-too-large")


def test_a_result_too_large_to_store_fails_the_job_in_production_and_in_the_sandbox(
    key_api, database_url, redis_server
):
    api = key_api("pro")
    document = {"blob": "y" * 5000}
    mapping = {f"copy{i}": "blob" for i in range(60)}  # 60 copies: 300 KB from a 5 KB input
    body = {"workflow": "json-transform", "input": {"document": document, "mapping": mapping}}
    job = api("POST", "/v1/jobs", json=body).json()
    run_worker_burst(worker_env(database_url, redis_server.url))
    failed = api("GET", f"/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed" and failed["error"]["type"] == "ResultTooLarge"

    sandboxed = api("POST", "/sandbox/v1/jobs", json=body).json()
    assert sandboxed["status"] == "failed" and sandboxed["error"]["type"] == "ResultTooLarge"
    assert sandboxed["result"] is None
