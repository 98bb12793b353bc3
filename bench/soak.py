"""Soak benchmark with faults: the Procfile's processes on real PostgreSQL and Redis, mixed traffic
from many keys for a fixed time, while the worker is SIGKILLed, Redis restarts and a web worker
restarts.

    make soak                       # or: SOAK_SECONDS=20 .venv/bin/python bench/soak.py

What it does, in order:
1. starts PostgreSQL and Redis on loopback (tests/servers.py), runs the Procfile's `release`
   line, then its `web` and `worker` lines as they are, through bash, each in its own session,
   with PORT, DATABASE_URL, REDIS_URL, WEB_CONCURRENCY and SECRET_KEY in the environment;
2. signs up SOAK_ACCOUNTS developers over HTTP as a browser would (each from its own client
   address, as the router reports it in X-Forwarded-For) and creates a key on the portal for
   each; a third stay on Sandbox, a third are moved to Pro and a third to Enterprise directly
   in the database (before their keys are first used);
3. drives mixed traffic for SOAK_SECONDS (default 60), one thread per key: v1 jobs (`echo`,
   `text-stats`, a few `delay` jobs of 2-5 s, a few cancels), job reads and lists, the
   workflow catalogue, calls the gate admits and the core refuses (an unknown job: 404, an
   unknown workflow: 400), sandbox jobs and reads, GET /api/usage and portal pages;
4. meanwhile, at 20 % of the run, SIGKILLs the worker's whole process tree (a dyno dying) and
   starts the Procfile's `worker` line again (the platform restarting the dyno); at 45 % stops
   Redis and starts it again on the same port (empty: no persistence); at 70 % sends
   SOAK_WEB_SIGNAL (TERM, or KILL) to one gunicorn worker, which gunicorn replaces
   (SOAK_FAULTS, default `worker,redis,web`, picks which of the three happen);
5. drains: waits up to SOAK_DRAIN_SECONDS (default 180) for every job that got a 202 to finish
   (read from the database, so the drain adds no API calls); the worker's `requeue-jobs`
   schedule (JOBS_REQUEUE_CRON, every minute) rescues jobs stranded by the faults after 2 min;
6. reconciles usage: after two usage flushes, GET /api/usage per key, compared with the calls
   the app admitted per key (see `admitted()`), and the persisted `usage_daily` rows;
7. throughout traffic and drain, samples each second the PSS (psutil's memory_full_info().pss:
   shared pages split between their sharers) of every process in the `web` tree (gunicorn's
   master and workers) and the `worker` tree (the supervisor, its RQ workers and their work
   horses), and reports each tree's peak against a standard dyno's 512 MB, with each of its
   processes' PSS at that peak.

It prints requests sent, 5xx, 429s by kind, jobs submitted / succeeded / failed / pending after
the drain / lost, usage counted versus admitted, and peak PSS per process type; it exits 1 when
a target is missed: 0 lost (or still pending) jobs, 0 5xx for valid calls, counted = admitted,
each process type's peak PSS under 512 MB. The processes' logs
are kept (path printed) when a target is missed.
"""

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import signup  # noqa: E402
from tests.servers import PostgresServer, RedisServer, free_port, wait_for  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", 60))
DRAIN_SECONDS = int(os.environ.get("SOAK_DRAIN_SECONDS", 180))
ACCOUNTS = int(os.environ.get("SOAK_ACCOUNTS", 24))
WEB_CONCURRENCY = os.environ.get("SOAK_WEB_CONCURRENCY", "2")
# Which faults to inject (default all three): e.g. SOAK_FAULTS=worker,web to leave Redis alone.
FAULTS = set(os.environ.get("SOAK_FAULTS", "worker,redis,web").replace(" ", "").split(","))
WEB_SIGNAL = getattr(signal, "SIG" + os.environ.get("SOAK_WEB_SIGNAL", "TERM").upper())
FLUSH_SECONDS = 5
TIER_CYCLE = ("sandbox", "pro", "enterprise")
FINISHED = ("succeeded", "failed", "canceled")
PENDING = ("queued", "running")
# 429s the gate answers before admitting a call: not counted. Any other 429 (the jobs-in-flight
# cap) comes from the core, after the gate admitted and counted the call.
GATE_REFUSALS = ("burst-limit-exceeded", "monthly-quota-exceeded", "sandbox-daily-cap-exceeded")
PORTAL_PAGES = ("/developer", "/developer/api-keys", "/docs", "/docs/api", "/pricing", "/api/openapi.json")
DYNO_BYTES = 512 * 2**20  # a standard dyno's memory
TEXT = "Levqor orchestrates jobs. Jobs run workflows. The weather is nice today, and the queue is short."


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def start(command: str, env: dict, log: Path) -> subprocess.Popen:
    """A Procfile line as the platform runs it: through a shell, in its own process group."""
    out = log.open("ab")
    return subprocess.Popen(
        ["bash", "-c", command], cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT
    )


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(process: subprocess.Popen, sig: int) -> None:
    """Signal the process group and every descendant (RQ's work horses start their own sessions):
    a dyno that dies takes everything in it."""
    members = tree(process.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(sig)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        kill_tree(process, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(process, signal.SIGKILL)
            process.wait()
    for member in tree(process.pid):  # orphans of a SIGTERMed tree
        member.kill()


def gunicorn_workers(web: subprocess.Popen) -> list[psutil.Process]:
    """The gunicorn master's children: the master is the first gunicorn process of the tree (bash
    execs a single command, so usually the Procfile process itself)."""
    for proc in tree(web.pid):
        try:
            if "gunicorn" in " ".join(proc.cmdline()):
                return [c for c in proc.children() if c.is_running()]
        except psutil.NoSuchProcess:  # a worker that is exiting right now
            continue
    return []


class MemoryPeaks:
    """Peak PSS of each Procfile process's whole tree (a dyno holds all of it), sampled each second
    from start() until stop(); the tree is looked up each time (the worker is killed and started
    again, work horses come and go)."""

    def __init__(self, procs: dict[str, subprocess.Popen], kinds=("web", "worker")):
        self.procs = procs
        self.peak = dict.fromkeys(kinds, 0)  # bytes, the tree's sum
        self.processes_at_peak = dict.fromkeys(kinds, 0)
        # Each tree's processes at its peak, (PSS bytes, pid, command line), largest first: which
        # ones grew is the first question when a peak is high.
        self.tree_at_peak: dict[str, list[tuple[int, int, str]]] = {kind: [] for kind in kinds}
        self.largest = dict.fromkeys(kinds, 0)  # bytes, one process
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def sample(self) -> None:
        for kind in self.peak:
            total, count, processes = 0, 0, []
            for proc in tree(self.procs[kind].pid):
                try:
                    pss = proc.memory_full_info().pss
                    processes.append((pss, proc.pid, " ".join(proc.cmdline())))
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                total, count = total + pss, count + 1
                self.largest[kind] = max(self.largest[kind], pss)
            if total > self.peak[kind]:
                self.peak[kind], self.processes_at_peak[kind] = total, count
                self.tree_at_peak[kind] = sorted(processes, reverse=True)
        self.samples += 1


@dataclass
class Account:
    email: str
    tier: str
    key: str
    web: httpx.Client  # the portal session
    jobs: list[str] = field(default_factory=list)  # v1 job ids that got a 202
    delay_jobs: list[str] = field(default_factory=list)
    sandbox_jobs: list[str] = field(default_factory=list)


@dataclass
class Call:
    account: Account | None
    area: str  # v1 | sandbox | meta | portal
    op: str
    status: int  # 0: no answer (transport error)
    problem: str  # the problem type's slug, if any
    at: float  # seconds since the traffic started
    error: str = ""


class Soak:
    def __init__(self):
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.t0 = 0.0
        self.wall_t0 = 0.0  # time.time() at t0: the sandbox's daily count is per UTC day
        self.usage_read_at = 0.0  # time.time() when GET /api/usage was read for the report
        self.faults: list[tuple[str, float, float]] = []  # (what, start, end) in run seconds
        self.jobs_submitted = Counter()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def call(self, client: httpx.Client, account, area, op, method, path, **kwargs) -> httpx.Response | None:
        at = self.now()
        try:
            response = client.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            with self.lock:
                self.calls.append(Call(account, area, op, 0, "", at, f"{type(err).__name__}: {err}"))
            return None
        slug = ""
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            try:
                slug = response.json().get("type", "").rsplit("/", 1)[-1]
            except ValueError:
                slug = "?"
        with self.lock:
            self.calls.append(Call(account, area, op, response.status_code, slug, at))
        return response


def sign_up(base: str, database_url: str, i: int, tier: str) -> Account:
    """A new developer as a browser would: sign up, confirm, log in, then create a key on the portal.
    Each comes from its own address (TEST-NET-3), as the router appends it: sign-up and log-in are
    limited per address."""
    forwarded = {"X-Forwarded-For": f"203.0.113.{i % 250 + 1}"}
    web = httpx.Client(base_url=base, timeout=30, headers=forwarded)
    email = f"soak-{i}-{uuid.uuid4().hex[:6]}@example.com"
    confirm = signup.confirm_in_database
    key = signup.developer_with_key(base, email, lambda _web, address: confirm(database_url, address), web)
    return Account(email, tier, key, web)


def drive(soak: Soak, base: str, account: Account, deadline: float, seed: int) -> None:
    rnd = random.Random(seed)
    api = httpx.Client(base_url=base, timeout=30, headers={"x-api-key": account.key})

    def v1(op, method, path, **kw):
        return soak.call(api, account, "v1", op, method, path, **kw)

    def sandbox(op, method, path, **kw):
        return soak.call(api, account, "sandbox", op, method, "/api/sandbox" + path, **kw)

    def submit(workflow: str, data: dict):
        response = v1(f"create {workflow}", "POST", "/api/v1/jobs", json={"workflow": workflow, "input": data})
        if response is not None and response.status_code == 202:
            job_id = response.json()["id"]
            account.jobs.append(job_id)
            if workflow == "delay":
                account.delay_jobs.append(job_id)
            with soak.lock:
                soak.jobs_submitted[workflow] += 1

    actions = [
        (14, lambda: submit("echo", {"n": rnd.randrange(10**6), "from": account.email})),
        (8, lambda: submit("text-stats", {"text": TEXT, "top": 3})),
        (1.2, lambda: submit("delay", {"seconds": rnd.randint(2, 5)})),
        (
            0.5,
            lambda: (
                account.delay_jobs
                and v1(
                    "cancel",
                    "POST",
                    f"/api/v1/jobs/{account.delay_jobs.pop(rnd.randrange(len(account.delay_jobs)))}/cancel",
                )
            ),
        ),
        (16, lambda: account.jobs and v1("get job", "GET", f"/api/v1/jobs/{rnd.choice(account.jobs[-20:])}")),
        (5, lambda: v1("list jobs", "GET", "/api/v1/jobs", params={"limit": 10})),
        (5, lambda: v1("workflows", "GET", "/api/v1/workflows")),
        (2, lambda: v1("unknown job (404)", "GET", "/api/v1/jobs/job_" + "0" * 20)),
        (1.5, lambda: v1("unknown workflow (400)", "POST", "/api/v1/jobs", json={"workflow": "nope", "input": {}})),
        (4, lambda: sandbox_create()),
        (3, lambda: account.sandbox_jobs and sandbox("get job", "GET", f"/v1/jobs/{rnd.choice(account.sandbox_jobs)}")),
        (2, lambda: sandbox("workflows", "GET", "/v1/workflows")),
        (6, lambda: soak.call(api, account, "meta", "usage", "GET", "/api/usage")),
        (5, lambda: soak.call(account.web, account, "portal", "page", "GET", rnd.choice(PORTAL_PAGES))),
    ]

    def sandbox_create():
        workflow, data = rnd.choice([("echo", {"n": rnd.randrange(1000)}), ("delay", {"seconds": 2})])
        response = sandbox(f"create {workflow}", "POST", "/v1/jobs", json={"workflow": workflow, "input": data})
        if response is not None and response.status_code == 202:
            account.sandbox_jobs.append(response.json()["id"])

    weights = [w for w, _ in actions]
    try:
        while time.monotonic() < deadline:
            rnd.choices(actions, weights)[0][1]()
            time.sleep(rnd.uniform(0.12, 0.4))  # a few calls a second: under the Sandbox tier's 10/s
    finally:
        api.close()


def admitted(call: Call) -> bool | None:
    """Did the gate admit (and count) this call? None when it cannot be known (no answer, or a
    5xx that may come from before or after the gate)."""
    if call.status == 0 or call.status >= 500:
        return None
    return not (call.status == 401 or (call.status == 429 and call.problem in GATE_REFUSALS))


def sandbox_day(soak: Soak, call: Call) -> bool | None:
    """Is this sandbox call in the day GET /api/usage's `calls_today` was read in? None within 2 s
    of a UTC midnight between them: which day the server counted it in is not known here."""
    wall = soak.wall_t0 + call.at
    day = int(soak.usage_read_at // 86400)
    if int(wall // 86400) == day:
        return None if wall - day * 86400 < 2 else True
    return None if (day * 86400) - wall < 2 else False


def faults(soak: Soak, redis_server: RedisServer, procs: dict, env: dict, logs: Path, stop_at: float) -> None:
    def at(fraction: float) -> bool:
        while soak.now() < SECONDS * fraction:
            if time.monotonic() > stop_at:
                return False
            time.sleep(0.1)
        return True

    def note(what: str, started: float) -> None:
        soak.faults.append((what, started, soak.now()))
        print(f"  [{started:5.1f}s-{soak.now():5.1f}s] {what}", flush=True)

    if at(0.20) and "worker" in FAULTS:
        started = soak.now()
        pids = [p.pid for p in tree(procs["worker"].pid)]
        kill_tree(procs["worker"], signal.SIGKILL)
        procs["worker"].wait()
        time.sleep(1)  # the platform notices and starts the dyno again
        procs["worker"] = start(procfile()["worker"], env, logs / "worker.log")
        note(f"worker's {len(pids)} processes SIGKILLed, the Procfile's worker line started again", started)
    if at(0.45) and "redis" in FAULTS:
        started = soak.now()
        redis_server.stop()
        time.sleep(2)
        redis_server.start()
        note(f"Redis stopped and started again on port {redis_server.port} (down ~2 s)", started)
    if at(0.70) and "web" in FAULTS:
        started = soak.now()
        workers = gunicorn_workers(procs["web"])
        if not workers:
            note("web restart: no gunicorn worker found!", started)
            return
        victim = workers[0]
        victim.send_signal(WEB_SIGNAL)
        replaced = wait_for(
            lambda: (
                {w.pid for w in gunicorn_workers(procs["web"])} - {w.pid for w in workers}
                and len(gunicorn_workers(procs["web"])) == int(WEB_CONCURRENCY)
            ),
            30,
        )
        how = (
            f"replaced by gunicorn ({sorted({w.pid for w in gunicorn_workers(procs['web'])})})"
            if replaced
            else "NOT replaced"
        )
        note(f"gunicorn worker {victim.pid} sent {signal.Signals(WEB_SIGNAL).name}, {how}", started)


def drain(database_url: str, job_ids: list[str]) -> dict[str, dict]:
    """Wait (bounded) until every job is finished; returns id -> row."""
    deadline = time.monotonic() + DRAIN_SECONDS
    started = time.monotonic()
    rows = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        while True:
            found = conn.execute(
                "SELECT id, status, workflow, input, result, error FROM jobs WHERE id = ANY(%s)", (job_ids,)
            ).fetchall()
            rows = {
                r[0]: {"status": r[1], "workflow": r[2], "input": r[3], "result": r[4], "error": r[5]} for r in found
            }
            pending = [j for j in job_ids if rows.get(j, {}).get("status") in PENDING]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(2)
    print(f"  drain: {time.monotonic() - started:.0f} s, {len(pending)} job(s) still pending", flush=True)
    return rows


def summarise_logs(logs: Path) -> list[str]:
    out = []
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        bad = [line for line in text if re.search(r"Traceback|\bERROR\b|unhandled error|CRITICAL", line)]
        out.append(f"{log.name}: {len(text)} lines, {len(bad)} error lines")
        out += [f"    {line[:240]}" for line in bad[:8]]
    return out


def main() -> int:
    for tool in ("redis-server", "bash"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (make system-deps installs it)")
    processes = procfile()
    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="lvq-soak-"))
    logs = workdir / "logs"
    logs.mkdir()
    procs: dict[str, subprocess.Popen] = {}
    accounts: list[Account] = []
    soak = Soak()
    memory = MemoryPeaks(procs)
    ok = False
    try:
        database_url = postgres.create_database("levqor_soak")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV", "VIRTUAL_ENV"))} | {
            "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            "PORT": str(port),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "WEB_CONCURRENCY": WEB_CONCURRENCY,
            "SECRET_KEY": "soak-" + uuid.uuid4().hex,
            "LEVQOR_VAR_DIR": str(workdir),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS),
            "JOBS_REQUEUE_CRON": os.environ.get("JOBS_REQUEUE_CRON", "* * * * *"),
        }
        release = subprocess.run(
            ["bash", "-c", processes["release"]], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if release.returncode != 0:
            sys.exit(f"release failed: {release.stderr[-2000:]}")
        procs["web"] = start(processes["web"], env, logs / "web.log")
        procs["worker"] = start(processes["worker"], env, logs / "worker.log")
        base = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(base + "/api/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        if not wait_for(up, 60):
            sys.exit("web did not answer /api/health within 60 s")
        print(f"web on {base} (WEB_CONCURRENCY={WEB_CONCURRENCY}), worker started; logs in {logs}", flush=True)

        t = time.monotonic()
        accounts = [sign_up(base, database_url, i, TIER_CYCLE[i % 3]) for i in range(ACCOUNTS)]
        with psycopg.connect(database_url, autocommit=True) as conn:
            for tier in ("pro", "enterprise"):
                emails = [a.email for a in accounts if a.tier == tier]
                conn.execute("UPDATE accounts SET tier = %s WHERE email = ANY(%s)", (tier, emails))
        print(
            f"{len(accounts)} accounts signed up with a key each over HTTP in {time.monotonic() - t:.1f} s "
            f"({', '.join(f'{n} {tier}' for tier, n in Counter(a.tier for a in accounts).items())})",
            flush=True,
        )

        print(f"traffic for {SECONDS} s from {len(accounts)} keys; faults:", flush=True)
        soak.t0, soak.wall_t0 = time.monotonic(), time.time()
        memory.start()
        deadline = soak.t0 + SECONDS
        threads = [
            threading.Thread(target=drive, args=(soak, base, a, deadline, i), daemon=True)
            for i, a in enumerate(accounts)
        ]
        injector = threading.Thread(target=faults, args=(soak, redis_server, procs, env, logs, deadline), daemon=True)
        for th in [*threads, injector]:
            th.start()
        for th in threads:
            th.join(timeout=SECONDS + 120)
        injector.join(timeout=60)
        traffic_seconds = soak.now()

        job_ids = [j for a in accounts for j in a.jobs]
        rows = drain(database_url, job_ids)
        memory.stop()
        time.sleep(2 * FLUSH_SECONDS + 1)  # two usage flushes
        usage = {}
        soak.usage_read_at = time.time()
        for a in accounts:
            response = httpx.get(base + "/api/usage", headers={"x-api-key": a.key}, timeout=30)
            usage[a.key] = response.json() if response.status_code == 200 else {"error": response.status_code}
        with psycopg.connect(database_url, autocommit=True) as conn:
            persisted = {
                email: (calls, sandbox_calls)
                for email, calls, sandbox_calls in conn.execute(
                    "SELECT a.email, COALESCE(SUM(u.calls), 0), COALESCE(SUM(u.sandbox_calls), 0) "
                    "FROM accounts a LEFT JOIN usage_daily u ON u.account_id = a.id GROUP BY a.email"
                ).fetchall()
            }
        ok = report(soak, accounts, rows, usage, persisted, traffic_seconds, logs, memory)
    finally:
        for process in procs.values():
            stop(process)
        for a in accounts:
            a.web.close()
        redis_server.close()
        postgres.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nlogs kept in {logs}")
    return 0 if ok else 1


def report(soak, accounts, rows, usage, persisted, traffic_seconds, logs, memory: MemoryPeaks) -> bool:
    calls = soak.calls
    redis_fault = next(((s, e) for what, s, e in soak.faults if what.startswith("Redis")), None)

    def in_redis_outage(c: Call) -> bool:
        return bool(redis_fault) and redis_fault[0] - 0.5 <= c.at <= redis_fault[1] + 5

    print(f"\n== soak: {traffic_seconds:.0f} s of traffic, {len(accounts)} keys ==")
    for what, s, _ in soak.faults:
        print(f"  fault at {s:5.1f}s: {what}")
    by_area = Counter(c.area for c in calls)
    print(f"\nrequests sent: {len(calls)} ({', '.join(f'{a} {n}' for a, n in sorted(by_area.items()))})")
    print(
        f"  {len(calls) / max(traffic_seconds, 1):.0f} req/s; statuses: "
        f"{dict(sorted(Counter(c.status for c in calls).items()))}"
    )

    no_answer = [c for c in calls if c.status == 0]
    fivexx = [c for c in calls if c.status >= 500]
    # Documented (README, "Redis outage"): sandbox jobs answer 503 while Redis is down.
    documented = [
        c
        for c in fivexx
        if c.area == "sandbox" and c.status == 503 and c.problem == "service-unavailable" and in_redis_outage(c)
    ]
    undocumented = [c for c in fivexx if c not in documented]
    print(f"5xx for valid calls: {len(undocumented)}", end="")
    print(f" (+{len(documented)} documented 503 from the sandbox while Redis was down)" if documented else "")
    for (area, op, status, slug), n in Counter((c.area, c.op, c.status, c.problem) for c in undocumented).most_common():
        print(f"    {n:5d} x {status} {slug or ''} on {area} {op}")
    if undocumented:
        print(f"    first at {min(c.at for c in undocumented):.1f}s, last at {max(c.at for c in undocumented):.1f}s")
    print(f"no answer (connection closed/refused, timeout): {len(no_answer)}")
    for (area, op, err), n in Counter((c.area, c.op, c.error[:90]) for c in no_answer).most_common(6):
        times = ", ".join(f"{c.at:.1f}s" for c in no_answer if (c.area, c.op, c.error[:90]) == (area, op, err))
        print(f"    {n:5d} x {area} {op}: {err} (at {times[:80]})")
    tooman = Counter(c.problem or "?" for c in calls if c.status == 429)
    print(f"429 (not errors): {sum(tooman.values())} {dict(tooman)}")

    # -- jobs
    submitted = [j for a in accounts for j in a.jobs]
    statuses = Counter(rows[j]["status"] if j in rows else "missing" for j in submitted)
    pending = sum(statuses[s] for s in PENDING)
    lost = statuses["missing"]
    wrong = [
        j
        for j in submitted
        if rows.get(j, {}).get("status") == "succeeded"
        and rows[j]["workflow"] == "echo"
        and rows[j]["result"] != rows[j]["input"]
    ]
    print(
        f"\njobs submitted (202): {len(submitted)} {dict(soak.jobs_submitted)}; succeeded {statuses['succeeded']}, "
        f"failed {statuses['failed']}, canceled {statuses['canceled']}, still pending after the drain {pending} "
        f"({statuses['queued']} queued, {statuses['running']} running), lost {lost}"
    )
    if wrong:
        print(f"  echo jobs with a wrong result: {len(wrong)} (e.g. {wrong[0]})")
    for j in [j for j in submitted if rows.get(j, {}).get("status") == "failed"][:5]:
        print(f"  failed {j} ({rows[j]['workflow']}): {json.dumps(rows[j]['error'])[:200]}")
    for j in [j for j in submitted if rows.get(j, {}).get("status") in PENDING][:5]:
        print(f"  pending {j} ({rows[j]['workflow']}, {rows[j]['status']})")

    # -- usage
    # (area, True | None) -> key -> calls: admitted, or of unknown outcome
    tally: dict[tuple, Counter] = defaultdict(Counter)
    for c in calls:
        if c.area == "v1" and c.account is not None:
            tally[(c.area, admitted(c))][c.account.key] += 1
        elif c.area == "sandbox" and c.account is not None:
            # A soak across midnight UTC: calls_today counts the new day's calls only.
            today = sandbox_day(soak, c)
            if today is not False:
                tally[(c.area, admitted(c) if today else None)][c.account.key] += 1
    v1_admitted, v1_unknown = tally[("v1", True)], tally[("v1", None)]
    sb_admitted, sb_unknown = tally[("sandbox", True)], tally[("sandbox", None)]
    mismatches = []
    totals = defaultdict(int)
    for a in accounts:
        u = usage[a.key]
        counted = u.get("calls_used", -1)
        sb_counted = u.get("sandbox", {}).get("calls_today", -1)
        db_calls, db_sandbox = persisted.get(a.email, (0, 0))
        totals["admitted"] += v1_admitted[a.key]
        totals["unknown"] += v1_unknown[a.key]
        totals["counted"] += counted
        totals["persisted"] += db_calls
        totals["sb_admitted"] += sb_admitted[a.key]
        totals["sb_unknown"] += sb_unknown[a.key]
        totals["sb_counted"] += sb_counted
        totals["sb_persisted"] += db_sandbox
        exact = counted == v1_admitted[a.key] and sb_counted == sb_admitted[a.key]
        within = (
            v1_admitted[a.key] <= counted <= v1_admitted[a.key] + v1_unknown[a.key]
            and sb_admitted[a.key] <= sb_counted <= sb_admitted[a.key] + sb_unknown[a.key]
        )
        if not (exact or within):
            mismatches.append(
                f"  {a.email} ({a.tier}): v1 counted {counted} / admitted {v1_admitted[a.key]} "
                f"(+{v1_unknown[a.key]} unknown); sandbox counted {sb_counted} / admitted {sb_admitted[a.key]} "
                f"(+{sb_unknown[a.key]} unknown); persisted {db_calls} / {db_sandbox}"
            )
    print(
        f"\nusage, v1: counted {totals['counted']} (GET /api/usage), admitted {totals['admitted']}, "
        f"unknown outcome {totals['unknown']}; persisted in usage_daily {totals['persisted']}"
    )
    print(
        f"usage, sandbox: counted {totals['sb_counted']}, admitted {totals['sb_admitted']}, unknown outcome "
        f"{totals['sb_unknown']}; persisted {totals['sb_persisted']}"
    )
    print(f"keys whose counted != admitted: {len(mismatches)} of {len(accounts)}")
    if redis_fault and mismatches:
        # Counters live in Redis and are persisted every USAGE_FLUSH_SECONDS: a Redis that restarts
        # empty loses what was counted since the last flush (README, "Durability").
        window = [
            c
            for c in calls
            if c.area == "v1" and admitted(c) and redis_fault[0] - FLUSH_SECONDS - 0.5 <= c.at <= redis_fault[0]
        ]
        short = totals["admitted"] - totals["counted"]
        print(
            f"  v1 shortfall {short}; v1 calls admitted in the {FLUSH_SECONDS} s (one usage flush interval) "
            f"before Redis stopped: {len(window)}"
        )
    for line in mismatches[:10]:
        print(line)

    mb = 2**20
    print(f"\npeak PSS per process type (whole tree, {memory.samples} samples a second apart, traffic and drain):")
    for kind in memory.peak:
        print(
            f"  {kind:7} {memory.peak[kind] / mb:6.0f} MB in {memory.processes_at_peak[kind]} processes "
            f"(largest one {memory.largest[kind] / mb:.0f} MB); a standard dyno has {DYNO_BYTES // mb} MB"
        )
    if "worker" in memory.peak:
        print(f"  (web: WEB_CONCURRENCY={WEB_CONCURRENCY}; worker: the supervisor, its RQ workers and work horses)")
    for kind, processes in memory.tree_at_peak.items():
        print(f"  {kind} at its peak, MB per process: " + ", ".join(f"{pss / mb:.0f}" for pss, _, _ in processes))

    print("\nprocess logs:")
    for line in summarise_logs(logs):
        print("  " + line)

    targets = {
        "0 lost jobs": lost == 0,
        "0 jobs pending after the drain": pending == 0,
        "0 5xx for valid calls": not undocumented,
        "counted = admitted (every key, v1 and sandbox)": not mismatches,
        "echo results intact": not wrong,
        **{f"{kind} peak PSS < {DYNO_BYTES // 2**20} MB": 0 < peak < DYNO_BYTES for kind, peak in memory.peak.items()},
    }
    print()
    for name, met in targets.items():
        print(f"{'PASS' if met else 'FAIL'}  {name}")
    return all(targets.values())


if __name__ == "__main__":
    sys.exit(main())
