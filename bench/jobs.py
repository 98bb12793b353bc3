"""Jobs end to end: the app's worker pool against a bare RQ pool of the same size, in one run.

    make bench-jobs                 # or: .venv/bin/python bench/jobs.py [--jobs 200] [--seconds 10] [--rounds 2]

Starts PostgreSQL and Redis on loopback (tests/servers.py), runs the Procfile's `release` line, then
its `web` and `worker` lines as they are (WORKER_CONCURRENCY=--concurrency API workers; the pool's
periodic and webhook workers come with it), and beside them a bare RQ pool of the same size
(`rq worker-pool -n <concurrency>`, RQ's Worker in bench/peers/rq_bare.py, which loads the function's
module before forking as the app's worker loads the app) on the same Redis, on its own queue,
running the same echo function (levqor_core.apijobs.workflows.echo) that the `echo` workflow runs.

Two measurements, each alternating app / bare RQ for --rounds rounds:
  - latency: --clients client threads each submit one echo job, poll it every --poll-ms until it
    has succeeded, and go again, for --seconds. The app's client is a developer's: POST
    /api/v1/jobs with a key, then GET /api/v1/jobs/{id}; bare RQ's enqueues the function with
    RQ's Queue and polls the job's status in Redis. p50 / p90 of submit-to-succeeded, as the
    client sees it (both poll at the same interval), with the submit's own p50 and the status
    reads a job took.
  - throughput: --jobs jobs submitted at once (the same client threads), then the time from the
    first submit to the last job's own finish time (the job row's finished_at; RQ's ended_at):
    jobs per second the pool gets through.
Prints both with the ratios of issue 28 (app ÷ bare RQ: throughput ≥ 0.8×, p50 ≤ 1.25×), the CPU
each pool's process tree (work horses included) spent per job in the batches, steadier than jobs/s
on a shared machine, and where an app job's time went (its row's timestamps).
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC
from pathlib import Path

import httpx
import psycopg
import redis
from rq import Queue
from rq.job import Job as RQJob

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (bench/run.py: the Procfile's lines, sign-up, start/stop)

from levqor_core import tiers  # noqa: E402
from tests.servers import PostgresServer, RedisServer, free_port  # noqa: E402

ECHO = "levqor_core.apijobs.workflows.echo"
BARE_QUEUE = "bench-bare-rq"
GOALS = {"throughput": 0.8, "p50": 1.25}  # app ÷ bare RQ (issue 28): at least / at most


class AppJobs:
    """Jobs as a developer runs them: POST /api/v1/jobs, then GET /api/v1/jobs/{id}."""

    label = "app (API + Procfile worker)"

    def __init__(self, base: str, keys: list[str], database_url: str):
        self.clients = [httpx.Client(base_url=base, timeout=30, headers={"x-api-key": k}) for k in keys]
        self.database_url = database_url

    def submit(self, client: int, data: dict) -> str:
        answer = self.clients[client].post("/api/v1/jobs", json={"workflow": "echo", "input": data})
        if answer.status_code != 202:
            raise RuntimeError(f"POST /api/v1/jobs: {answer.status_code} {answer.text[:300]}")
        return answer.json()["id"]

    def status(self, client: int, job_id: str) -> str:
        answer = self.clients[client].get(f"/api/v1/jobs/{job_id}")
        if answer.status_code != 200:
            raise RuntimeError(f"GET /api/v1/jobs/{job_id}: {answer.status_code} {answer.text[:300]}")
        return answer.json()["status"]

    def finished_at(self, job_ids: list[str]) -> list[float] | None:
        """Each job's finish time, once all have succeeded; else None."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute("SELECT status, finished_at FROM jobs WHERE id = ANY(%s)", (job_ids,)).fetchall()
        if len(rows) < len(job_ids) or any(s != "succeeded" for s, _ in rows):
            failed = [s for s, _ in rows if s in ("failed", "canceled")]
            if failed:
                raise RuntimeError(f"{len(failed)} app job(s) did not succeed")
            return None
        return [at.replace(tzinfo=at.tzinfo or UTC).timestamp() for _, at in rows]

    def stages(self) -> str:
        """Where an app job's time went, from its row: medians of created → started → finished."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            waited, ran = conn.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY started_at - created_at), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - started_at) "
                "FROM jobs WHERE status = 'succeeded'"
            ).fetchone()
        return (
            f"app jobs, median from the row's timestamps: created → started {waited.total_seconds() * 1000:.0f} ms, "
            f"started → finished {ran.total_seconds() * 1000:.0f} ms"
        )


class BareRQ:
    """The same function on a bare RQ pool: Queue.enqueue, then the job's status in Redis."""

    label = "bare RQ pool (same size)"

    def __init__(self, redis_url: str):
        self.connection = redis.Redis.from_url(redis_url)
        self.queue = Queue(BARE_QUEUE, connection=self.connection)

    def submit(self, client: int, data: dict) -> str:
        return self.queue.enqueue(ECHO, data).id

    def status(self, client: int, job_id: str) -> str:
        status = RQJob.fetch(job_id, connection=self.connection).get_status()
        return "succeeded" if status == "finished" else str(status)

    def finished_at(self, job_ids: list[str]) -> list[float] | None:
        jobs = RQJob.fetch_many(job_ids, connection=self.connection)
        if any(j is None or j.get_status() in ("failed", "stopped", "canceled") for j in jobs):
            raise RuntimeError("a bare RQ job did not finish")
        if any(j.get_status() != "finished" or j.ended_at is None for j in jobs):
            return None
        return [j.ended_at.replace(tzinfo=j.ended_at.tzinfo or UTC).timestamp() for j in jobs]


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session and everything in it (RQ's work horses too)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def latency(system, clients: int, seconds: float, poll: float) -> list[tuple[float, float, int]]:
    """(submit-to-succeeded, the submit's own time (s), status reads) of each job of closed-loop
    clients, each one job at a time."""
    deadline = time.monotonic() + seconds
    times: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            started = time.monotonic()
            job_id = system.submit(i, {"client": i, "n": n})
            submitted, reads = time.monotonic(), 0
            while True:
                status = system.status(i, job_id)
                reads += 1
                if status == "succeeded":
                    break
                if status in ("failed", "canceled", "stopped"):
                    raise RuntimeError(f"{system.label}: job {job_id} {status}")
                time.sleep(poll)
            with lock:
                times.append((time.monotonic() - started, submitted - started, reads))
            n += 1

    with ThreadPoolExecutor(clients) as pool:
        for done in [pool.submit(client, i) for i in range(clients)]:
            done.result()
    return times


def throughput(
    system, clients: int, accounts: int, jobs: int, pools: list, timeout: float = 300
) -> tuple[float, list[float]]:
    """Jobs per second from the first submit to the last job's own finish time, and the CPU (ms) each
    of `pools` (process trees: the worker pool, the web) spent per job meanwhile; the jobs go round
    `accounts` accounts, so none is over its tier's jobs in flight."""
    cpu_before = [bench.tree_cpu_seconds(p) for p in pools]
    started = time.time()
    with ThreadPoolExecutor(clients) as pool:
        ids = list(pool.map(lambda n: system.submit(n % accounts, {"n": n}), range(jobs)))
    deadline = time.monotonic() + timeout
    while (finished := system.finished_at(ids)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.label}: {jobs} jobs not done within {timeout:.0f} s")
        time.sleep(0.05)
    time.sleep(0.5)  # the last work horses exit and are waited for: their CPU is the pool's then
    cpu = [(bench.tree_cpu_seconds(p) - before) / jobs * 1000 for p, before in zip(pools, cpu_before, strict=True)]
    return jobs / (max(finished) - started), cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=4, help="API workers in each pool (WORKER_CONCURRENCY)")
    parser.add_argument("--clients", type=int, default=4, help="client threads (each with its own key)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per throughput batch")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per latency run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating app / bare RQ")
    parser.add_argument("--poll-ms", type=float, default=10, help="poll interval while waiting for a job")
    parser.add_argument("--keep", action="store_true", help="keep the processes' logs (their path is printed)")
    args = parser.parse_args()
    t0 = time.monotonic()

    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="lvq-bench-jobs-"))
    procs: dict[str, subprocess.Popen] = {}
    try:
        database_url = postgres.create_database("levqor_bench_jobs")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV", "VIRTUAL_ENV"))} | {
            "PATH": f"{bench.VENV_BIN}:{os.environ['PATH']}",
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "WORKER_CONCURRENCY": str(args.concurrency),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "bench",
            "LEVQOR_VAR_DIR": str(workdir),
            "LOG_LEVEL": "WARNING",
            "FLASK_APP": "wsgi:flask_app",
        }
        lines = bench.procfile()
        release = subprocess.run(["bash", "-c", lines["release"]], cwd=bench.ROOT, env=env, capture_output=True)
        if release.returncode != 0:
            sys.exit(f"release failed:\n{release.stderr.decode()[-2000:]}")
        procs["web"] = bench.start(["bash", "-c", lines["web"]], env, workdir / "web.log")
        procs["worker"] = bench.start(["bash", "-c", lines["worker"]], env, workdir / "worker.log")
        rq_argv = [str(bench.VENV_BIN / "rq"), "worker-pool", "-n", str(args.concurrency), "-u", redis_server.url]
        rq_argv += ["-P", str(HERE / "peers"), "-P", str(bench.ROOT), "-w", "rq_bare.PreloadedWorker"]
        procs["bare"] = bench.start([*rq_argv, BARE_QUEUE], env, workdir / "bare.log")
        base = f"http://127.0.0.1:{port}"
        bench.wait_up(base + "/api/health", procs["web"], workdir / "web.log")
        # A batch is spread over enough Enterprise accounts to hold it in flight at once.
        accounts = max(args.clients, -(-args.jobs // tiers.TIERS["enterprise"].max_jobs_in_flight))
        with ThreadPoolExecutor(4) as pool:
            made = list(pool.map(lambda i: bench.sign_up(base, database_url, i), range(accounts)))
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE accounts SET tier = 'enterprise' WHERE email = ANY(%s)", ([e for e, _ in made],))
        systems = {"app": AppJobs(base, [k for _, k in made], database_url), "bare": BareRQ(redis_server.url)}
        setup_seconds = time.monotonic() - t0

        poll = args.poll_ms / 1000
        for system in systems.values():  # warm: work horses' imports, the app's key cache
            latency(system, args.clients, 2, poll)
        lat = {name: [] for name in systems}
        rate = {name: [] for name in systems}
        cpu_per_job = {name: [] for name in systems}
        order = list(systems)
        for round_ in range(args.rounds):
            for name in order[round_ % 2 :] + order[: round_ % 2]:
                lat[name] += latency(systems[name], args.clients, args.seconds, poll)
                pools = [procs["worker"], procs["web"]] if name == "app" else [procs["bare"]]
                jps, cpu = throughput(systems[name], args.clients, accounts, args.jobs, pools)
                rate[name].append(jps)
                cpu_per_job[name].append(cpu)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        stages = systems["app"].stages()
        for name, process in procs.items():
            if process.poll() is not None:
                sys.exit(f"{name} exited during the run:\n{(workdir / f'{name}.log').read_text()[-3000:]}")
    finally:
        for process in procs.values():
            stop(process)
        redis_server.close()
        postgres.close()
        if args.keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\n{args.concurrency} API workers each; {args.clients} clients (one key each), polling every "
        f"{args.poll_ms:g} ms; latency runs of {args.seconds:g} s, throughput batches of {args.jobs} jobs; "
        f"{args.rounds} rounds alternating; {os.cpu_count()} CPUs shared by servers, workers and clients"
    )
    print(f"setup {setup_seconds:.0f} s, total {time.monotonic() - t0:.0f} s\n")
    print(
        f"{'':30} {'jobs/s (each round)':>26} {'p50 ms':>8} {'p90 ms':>8} {'latency samples':>16}"
        f" {'submit p50 ms':>14} {'reads p50':>10}"
    )
    figures = {}
    for name, system in systems.items():
        totals = [t for t, _, _ in lat[name]]
        p50 = statistics.median(totals) * 1000
        p90 = statistics.quantiles(totals, n=10)[-1] * 1000
        submit = statistics.median(s for _, s, _ in lat[name]) * 1000
        reads = statistics.median(r for _, _, r in lat[name])
        jps = statistics.median(rate[name])
        figures[name] = (jps, p50)
        each = " ".join(f"{r:.0f}" for r in rate[name])
        print(
            f"{system.label:30} {jps:8.1f} ({each:>15}) {p50:8.1f} {p90:8.1f} {len(totals):16d}"
            f" {submit:14.1f} {reads:10g}"
        )
    app_cpu = [statistics.median(run[i] for run in cpu_per_job["app"]) for i in range(2)]
    bare_cpu = statistics.median(run[0] for run in cpu_per_job["bare"])
    print(
        f"CPU per job in the throughput batches (median): app's worker tree {app_cpu[0]:.1f} ms (+ web "
        f"{app_cpu[1]:.1f} ms for the POST), bare RQ pool {bare_cpu:.1f} ms; worker ÷ bare "
        f"{app_cpu[0] / bare_cpu:.1f}×"
    )
    print(stages)
    t_ratio = figures["app"][0] / figures["bare"][0]
    p_ratio = figures["app"][1] / figures["bare"][1]
    print(f"\napp ÷ bare RQ: throughput {t_ratio:.2f}× (goal ≥ {GOALS['throughput']}: ", end="")
    print(f"{'met' if t_ratio >= GOALS['throughput'] else 'missed'}); p50 submit-to-succeeded {p_ratio:.2f}× ", end="")
    print(f"(goal ≤ {GOALS['p50']}: {'met' if p_ratio <= GOALS['p50'] else 'missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
