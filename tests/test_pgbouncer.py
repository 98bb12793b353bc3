"""The Procfile's processes behind a real PgBouncer in transaction pooling (DATABASE_PGBOUNCER=1).

A platform's pooler hands each transaction whichever server connection is free. psycopg 3 prepares
a statement on the server after 5 executions, so without the setting a later transaction of the
same client meets a server connection that never saw it: 500s under concurrent job polling."""

import concurrent.futures
import subprocess
import time
import uuid

import httpx
import psycopg
import pytest

from . import signup
from .helpers import ROOT, procfile, shipped_env, start_procfile_line, stop_procfile_line, wait_for, web_is_up
from .servers import PgBouncerServer, RedisServer, free_port

CLIENTS = 8
# Each client's polls of its job that reach the database (200s, not the burst limit's 429s): past
# psycopg's 5 executions on every pooled connection. A fixed number of polls gave fewer 200s the
# faster the machine (more of them fell in one burst second); MAX_POLLS bounds a client refused
# for ever.
SUCCESSFUL_POLLS = 12
MAX_POLLS = 400


@pytest.fixture
def pgbouncer(postgres_server):
    server = PgBouncerServer(postgres_server, pool_size=4).start()
    yield server
    server.close()


def _poll(base: str, key: str) -> list[int]:
    """A developer's client: sign a job up, then poll it; the statuses seen."""
    with httpx.Client(base_url=base, timeout=30, headers={"x-api-key": key}) as api:
        created = api.post("/api/v1/jobs", json={"workflow": "echo", "input": {"n": 1}})
        statuses = [created.status_code]
        while statuses.count(200) < SUCCESSFUL_POLLS and len(statuses) <= MAX_POLLS:
            statuses.append(api.get(f"/api/v1/jobs/{created.json()['id']}").status_code)
            if statuses[-1] == 429:
                time.sleep(0.1)  # within the burst limit's second, as a client honouring Retry-After
        return statuses


def test_the_procfile_processes_work_behind_pgbouncer_in_transaction_pooling(postgres_server, pgbouncer, tmp_path):
    database = f"pgbouncer_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(database)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    redis = RedisServer().start()
    env = shipped_env(pgbouncer.url(database), redis.url, port, tmp_path) | {
        "DATABASE_PGBOUNCER": "1",
        "USAGE_FLUSH_SECONDS": "1",
        "REQUEST_LOG_FLUSH_SECONDS": "1",
        "WORKER_CONCURRENCY": "2",
    }
    processes = procfile()
    release = subprocess.run(["bash", "-c", processes["release"]], cwd=ROOT, env=env, capture_output=True, text=True)
    assert release.returncode == 0, release.stderr[-2000:]
    log = (tmp_path / "web.log").open("w")
    web, worker = start_procfile_line(processes["web"], env, output=log), start_procfile_line(processes["worker"], env)
    try:
        wait_for(lambda: web_is_up(base), 60, what="the web process answering")
        emails = [f"pooled-{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(CLIENTS)]
        keys = [signup.developer_with_key(base, e, lambda web, e: signup.confirm_with_cli(env, e)) for e in emails]
        # Every key's first call misses the key cache (a SQL lookup), then all poll at once.
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            seen = [status for statuses in pool.map(lambda k: _poll(base, k), keys) for status in statuses]
        assert seen.count(202) == CLIENTS
        assert all(status in (200, 429) for status in seen if status != 202), sorted(set(seen))
        # Within the burst limit (the rest are 429s): enough polls reached the database.
        assert seen.count(200) >= CLIENTS * 10

        direct = postgres_server.url(database)

        def persisted():
            with psycopg.connect(direct) as conn:
                usage = conn.execute("SELECT coalesce(sum(calls + sandbox_calls), 0) FROM usage_daily").fetchone()[0]
                logged = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
                done = conn.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0]
            return usage >= CLIENTS and logged >= CLIENTS * 10 and done == CLIENTS

        # The usage flush, the request log's COPY and the worker's job writes, all through PgBouncer.
        wait_for(persisted, 60, step=0.5, what="usage, request log and jobs persisted through PgBouncer")
    finally:
        stop_procfile_line(web)
        stop_procfile_line(worker)
        redis.close()
        log.close()
    web_log = (tmp_path / "web.log").read_text()
    assert "prepared statement" not in web_log and "Traceback" not in web_log, web_log[-3000:]
