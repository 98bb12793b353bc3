"""Scale run with faults: the hot path on a Redis Cluster, queues on a Redis of their own,
PgBouncer in front of PostgreSQL, three web dynos and two worker dynos, many keys.

    make bench-scale                # or: SCALE_SECONDS=45 SCALE_KEYS=2000 .venv/bin/python bench/scale.py

What it does, in order:
1. starts on loopback a Redis Cluster of 3 primaries and 3 replicas (`redis-server
   --cluster-enabled yes`, `redis-cli --cluster create --cluster-replicas 1`; SCALE_LIMITS=single:
   one plain Redis instead), a plain Redis for the queues, PostgreSQL and PgBouncer in front of
   it (transaction pooling, SCALE_PG_POOL server connections); runs the Procfile's `release`
   line through PgBouncer;
2. seeds SCALE_KEYS (20,000) accounts with a key each straight into PostgreSQL (COPY, the key
   hashed as the app hashes it: `levqor_core.keys.format`), a third each Sandbox, Pro and
   Enterprise: signing 20,000 developers up over HTTP would take the run's whole budget;
3. starts SCALE_WEB_DYNOS (3) web dynos, the Procfile's `web` line each on its own port
   (WEB_CONCURRENCY=SCALE_WEB_CONCURRENCY, 1), and SCALE_WORKER_DYNOS (2) `worker` dynos, with
   DATABASE_URL on PgBouncer (DATABASE_PGBOUNCER=1), REDIS_URL on the queues' Redis and
   LIMITS_REDIS_URL naming one node of the cluster;
4. drives mixed traffic for SCALE_SECONDS (45) from SCALE_CLIENTS (32) threads, each walking its
   share of the keys (so most keys get used), through a "router" that sends each call to a
   random dyno and, when the dyno refuses the connection (it is down), to the next: v1 jobs
   (`echo`, `text-stats`), job reads and lists, the workflow catalogue, an unknown job (404) and
   workflow (400) the gate counts, sandbox calls and GET /api/usage;
5. meanwhile, at 30 %, SIGKILLs one cluster primary (not the node LIMITS_REDIS_URL names), whose
   replica is promoted, and starts it again 10 s later (it rejoins as a replica); at 55 %
   SIGTERMs one web dyno's whole process group and starts the Procfile's `web` line again on the
   same port; at 80 % revokes a key with DELETE /api/key on one dyno after it was used on every
   dyno, and calls with it on the others at once;
6. drains the jobs, waits two usage flushes, reads GET /api/usage for every key used and
   `usage_daily`, and compares them per key with the calls the dynos admitted.

It prints calls/s, 5xx for valid calls, counted vs admitted (per key, summed, keys mismatched),
keys per shard (max / mean), the failover gap (seconds from the SIGKILL until the cluster answers
writes to the shard again, and the web dynos' "gate degraded" warnings), the peak of PostgreSQL
server connections (pg_stat_activity, polled), usage rows persisted vs keys used, and the
revocation check. It exits 1 when a target is missed: 0 5xx for valid calls, counted = admitted
on every key, every used key's usage persisted, the revoked key refused on every dyno at its next
call, no shard holding more than 1.3x the mean of keys, 0 lost jobs.
"""

import concurrent.futures
import contextlib
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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import redis
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import soak  # noqa: E402  (the soak run's processes, calls and reconciliation)
from levqor_core.keys.format import generate, hash_key, hint  # noqa: E402
from tests.servers import PgBouncerServer, PostgresServer, RedisServer, free_port, wait_for  # noqa: E402

SECONDS = int(os.environ.get("SCALE_SECONDS", 45))
KEYS = int(os.environ.get("SCALE_KEYS", 20000))
CLIENTS = int(os.environ.get("SCALE_CLIENTS", 32))
WEB_DYNOS = int(os.environ.get("SCALE_WEB_DYNOS", 3))
WORKER_DYNOS = int(os.environ.get("SCALE_WORKER_DYNOS", 2))
WEB_CONCURRENCY = os.environ.get("SCALE_WEB_CONCURRENCY", "1")
WORKER_CONCURRENCY = os.environ.get("SCALE_WORKER_CONCURRENCY", "2")
LIMITS = os.environ.get("SCALE_LIMITS", "cluster")  # cluster | single
PG_POOL = int(os.environ.get("SCALE_PG_POOL", 20))
DRAIN_SECONDS = int(os.environ.get("SCALE_DRAIN_SECONDS", 150))
# How long a primary may be silent before its replica takes over (cluster-node-timeout).
NODE_TIMEOUT_MS = int(os.environ.get("SCALE_NODE_TIMEOUT_MS", 3000))
FLUSH_SECONDS = soak.FLUSH_SECONDS
TIER_CYCLE = soak.TIER_CYCLE
MAX_SHARD_SKEW = 1.3


class RedisCluster:
    """3 primaries + 3 replicas of redis-server --cluster-enabled yes on loopback; each node keeps
    its ports and nodes.conf, so a killed node started again rejoins as it would on a platform."""

    def __init__(self, primaries: int = 3):
        self.size = primaries * 2
        self.dir = Path(tempfile.mkdtemp(prefix="lvq-cluster-"))
        self.ports = [free_port() for _ in range(self.size)]
        self.bus_ports = [free_port() for _ in range(self.size)]
        self.procs: dict[int, subprocess.Popen] = {}

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}"

    def start_node(self, i: int) -> None:
        node_dir = self.dir / str(self.ports[i])
        node_dir.mkdir(exist_ok=True)
        self.procs[i] = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.ports[i]),
                "--cluster-port",
                str(self.bus_ports[i]),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                # The other shards keep serving while one fails over (a managed cluster's default):
                # only that shard's accounts go to outage mode.
                "--cluster-require-full-coverage",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        if not wait_for(lambda: self.answers(i), 30):
            raise RuntimeError(f"cluster node {self.ports[i]} did not answer within 30 s")

    def answers(self, i: int) -> bool:
        try:
            return self.client(i).ping()
        except redis.RedisError:
            return False

    def client(self, i: int) -> redis.Redis:
        return redis.Redis(port=self.ports[i], socket_timeout=1, socket_connect_timeout=1)

    def start(self) -> "RedisCluster":
        for i in range(self.size):
            self.start_node(i)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        if not wait_for(self.ok, 60, step=0.5):
            raise RuntimeError("the cluster did not reach cluster_state:ok")
        return self

    def ok(self) -> bool:
        """Every live node sees cluster_state:ok and 3 primaries covering all slots."""
        for i, proc in self.procs.items():
            if proc.poll() is not None:
                continue
            try:
                info = self.client(i).cluster("INFO")
            except redis.RedisError:
                return False
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                return False
        return True

    def primaries(self) -> dict[int, list[tuple[int, int]]]:
        """Node index -> its slot ranges, as a live node sees it now."""
        live = next(i for i, p in self.procs.items() if p.poll() is None)
        slots = self.client(live).execute_command("CLUSTER SLOTS")
        out: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for start, end, primary, *_ in slots:
            out[self.ports.index(int(primary[1]))].append((int(start), int(end)))
        return dict(out)

    def kill(self, i: int) -> None:
        self.procs[i].kill()
        self.procs[i].wait()

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- seeding ---------------------------------------------------------------------------------------


@dataclass
class Seeded:
    accounts: list[soak.Account]
    ids: dict[str, int]  # email -> account id
    seconds: float


def seed(database_url: str, n: int) -> Seeded:
    """n confirmed accounts with an active key each, by COPY: the same rows sign-up and the portal's
    key creation write (the key stored only as the app's hash), none of the HTTP."""
    started = time.monotonic()
    run = uuid.uuid4().hex[:6]
    rows = []
    for i in range(n):
        raw = generate()
        rows.append((f"scale-{i}-{run}@example.com", TIER_CYCLE[i % 3], raw))
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY accounts (email, password_hash, active, fs_uniquifier, confirmed_at, tier, created_at) FROM STDIN"
        ) as copy:
            for email, tier, _ in rows:
                copy.write_row((email, "!seeded", True, uuid.uuid4().hex, "now", tier, "now"))
        ids = dict(conn.execute("SELECT email, id FROM accounts WHERE email LIKE %s", (f"%-{run}@example.com",)))
        with conn.cursor().copy(
            "COPY api_keys (id, account_id, key_hash, hint, status, created_at) FROM STDIN"
        ) as copy:
            for email, _, raw in rows:
                copy.write_row(("key_" + uuid.uuid4().hex[:16], ids[email], hash_key(raw), hint(raw), "active", "now"))
    accounts = [soak.Account(email, tier, raw, None) for email, tier, raw in rows]
    return Seeded(accounts, ids, time.monotonic() - started)


# -- traffic ---------------------------------------------------------------------------------------


class Router:
    """The platform's router: a call goes to a random dyno; a dyno that refuses the connection (it
    is down) is skipped, as the router stops sending to a stopped dyno. Nothing was sent then, so
    the call is not of unknown outcome."""

    def __init__(self, bases: list[str]):
        self.bases = bases
        self.rerouted = Counter()  # base -> calls sent elsewhere
        self.lock = threading.Lock()

    def clients(self, headers: dict) -> list[httpx.Client]:
        return [httpx.Client(base_url=b, timeout=30, headers=headers) for b in self.bases]


class Scale(soak.Soak):
    def __init__(self, router: Router):
        super().__init__()
        self.router = router
        self.revocation: dict = {}
        self.failover: dict = {}

    def routed(self, clients: list[httpx.Client], account, area, op, method, path, rnd, **kw):
        first = rnd.randrange(len(clients))
        for step in range(len(clients)):
            client = clients[(first + step) % len(clients)]
            at = self.now()
            try:
                response = client.request(method, path, headers={"x-api-key": account.key}, **kw)
            except httpx.ConnectError:
                with self.router.lock:
                    self.router.rerouted[str(client.base_url)] += 1
                continue
            except httpx.HTTPError as err:
                with self.lock:
                    self.calls.append(soak.Call(account, area, op, 0, "", at, f"{type(err).__name__}: {err}"))
                return None
            slug = ""
            if response.headers.get("content-type", "").startswith("application/problem+json"):
                try:
                    slug = response.json().get("type", "").rsplit("/", 1)[-1]
                except ValueError:
                    slug = "?"
            with self.lock:
                self.calls.append(soak.Call(account, area, op, response.status_code, slug, at))
            return response
        with self.lock:
            self.calls.append(soak.Call(account, area, op, 0, "", self.now(), "ConnectError: every dyno down"))
        return None


def drive(scale: Scale, keys: list[soak.Account], deadline: float, seed_: int) -> None:
    """One client thread: its share of the keys in turn, a few calls each, mixed."""
    rnd = random.Random(seed_)
    clients = scale.router.clients({})
    jobs: dict[str, list[str]] = defaultdict(list)
    sandbox_jobs: dict[str, list[str]] = defaultdict(list)

    def call(account, area, op, method, path, **kw):
        return scale.routed(clients, account, area, op, method, path, rnd, **kw)

    def submit(account, workflow, data):
        response = call(
            account, "v1", f"create {workflow}", "POST", "/api/v1/jobs", json={"workflow": workflow, "input": data}
        )
        if response is not None and response.status_code == 202:
            jobs[account.key].append(response.json()["id"])
            account.jobs.append(response.json()["id"])
            with scale.lock:
                scale.jobs_submitted[workflow] += 1

    def sandbox_create(account):
        response = call(
            account,
            "sandbox",
            "create echo",
            "POST",
            "/api/sandbox/v1/jobs",
            json={"workflow": "echo", "input": {"n": 1}},
        )
        if response is not None and response.status_code == 202:
            sandbox_jobs[account.key].append(response.json()["id"])

    actions = [
        (10, lambda a: submit(a, "echo", {"n": rnd.randrange(10**6), "from": a.email})),
        (4, lambda a: submit(a, "text-stats", {"text": soak.TEXT, "top": 3})),
        (12, lambda a: jobs[a.key] and call(a, "v1", "get job", "GET", f"/api/v1/jobs/{rnd.choice(jobs[a.key])}")),
        (6, lambda a: call(a, "v1", "list jobs", "GET", "/api/v1/jobs", params={"limit": 10})),
        (8, lambda a: call(a, "v1", "workflows", "GET", "/api/v1/workflows")),
        (2, lambda a: call(a, "v1", "unknown job (404)", "GET", "/api/v1/jobs/job_" + "0" * 20)),
        (
            1.5,
            lambda a: call(
                a, "v1", "unknown workflow (400)", "POST", "/api/v1/jobs", json={"workflow": "nope", "input": {}}
            ),
        ),
        (2, lambda a: sandbox_create(a)),
        (
            1.5,
            lambda a: (
                sandbox_jobs[a.key]
                and call(a, "sandbox", "get job", "GET", f"/api/sandbox/v1/jobs/{rnd.choice(sandbox_jobs[a.key])}")
            ),
        ),
        (2, lambda a: call(a, "sandbox", "workflows", "GET", "/api/sandbox/v1/workflows")),
        (3, lambda a: call(a, "meta", "usage", "GET", "/api/usage")),
    ]
    weights = [w for w, _ in actions]
    order = list(keys)
    rnd.shuffle(order)
    try:
        i = 0
        while time.monotonic() < deadline:
            account = order[i % len(order)]
            i += 1
            for _ in range(rnd.randint(1, 4)):  # a key's few calls, then the next key
                rnd.choices(actions, weights)[0][1](account)
    finally:
        for client in clients:
            client.close()


# -- faults and probes -----------------------------------------------------------------------------


def web_env(env: dict, port: int) -> dict:
    return env | {"PORT": str(port)}


def healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/api/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def failover(scale: Scale, cluster: RedisCluster, url_node: int) -> None:
    """SIGKILL a primary other than the node LIMITS_REDIS_URL names, and time until a write to one
    of its slots succeeds again through a cluster client (its replica promoted)."""
    primaries = cluster.primaries()
    victim = next(i for i in primaries if i != url_node)
    start, _ = primaries[victim][0]
    probe_key = next(f"lvq:scale-probe:{n}" for n in range(10**6) if key_slot(f"lvq:scale-probe:{n}".encode()) == start)
    started = scale.now()
    cluster.kill(victim)
    healed = None
    while scale.now() - started < 60:
        try:
            rc = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[url_node], socket_timeout=1)
            rc.set(probe_key, "1")
            rc.close()
            healed = scale.now()
            break
        except (redis.RedisError, IndexError):
            time.sleep(0.2)
    state_ok = wait_for(cluster.ok, 30, step=0.2) and scale.now()
    promoted = next(iter(i for i in cluster.primaries() if i not in primaries), None)
    scale.failover = {
        "victim_port": cluster.ports[victim],
        "started": started,
        "writable_after": (healed - started) if healed else None,
        "state_ok_after": (state_ok - started) if state_ok else None,
        "promoted_port": cluster.ports[promoted] if promoted is not None else None,
    }
    print(
        f"  [{started:5.1f}s] primary :{cluster.ports[victim]} SIGKILLed; its slots writable again after "
        f"{scale.failover['writable_after'] or float('nan'):.1f} s "
        f"(replica :{scale.failover['promoted_port']} promoted)",
        flush=True,
    )

    def rejoin():
        time.sleep(10)  # the platform replaces the lost node
        cluster.start_node(victim)
        print(f"  [{scale.now():5.1f}s] :{cluster.ports[victim]} started again (rejoins as a replica)", flush=True)

    threading.Thread(target=rejoin, daemon=True).start()


def restart_web(scale: Scale, webs: list, env: dict, ports: list[int], logs: Path) -> None:
    i = 1 % len(webs)
    started = scale.now()
    soak.stop(webs[i])  # SIGTERM to the dyno's process group, SIGKILL after 30 s
    stopped = scale.now()
    webs[i] = soak.start(soak.procfile()["web"], web_env(env, ports[i]), logs / f"web{i}.log")
    up = wait_for(lambda: healthy(f"http://127.0.0.1:{ports[i]}"), 60)
    print(
        f"  [{started:5.1f}s] web dyno {i} SIGTERMed (stopped in {stopped - started:.1f} s), started again: "
        f"{'up' if up else 'NOT up'} after {scale.now() - stopped:.1f} s",
        flush=True,
    )


def revoke_across_dynos(scale: Scale, key: soak.Account, bases: list[str]) -> None:
    """The key used on every dyno (each caches its record), revoked on the first, then called on
    every dyno at once: each must refuse it."""
    before = [httpx.get(b + "/api/v1/workflows", headers={"x-api-key": key.key}, timeout=30).status_code for b in bases]
    revoked = httpx.delete(bases[0] + "/api/key", headers={"x-api-key": key.key}, timeout=30).status_code
    after = [httpx.get(b + "/api/v1/workflows", headers={"x-api-key": key.key}, timeout=30).status_code for b in bases]
    scale.revocation = {"before": before, "revoke": revoked, "after": after}
    print(
        f"  [{scale.now():5.1f}s] key used on every dyno {before}, revoked on dyno 0 ({revoked}), next call {after}",
        flush=True,
    )


def faults(scale: Scale, cluster, url_node, webs, env, ports, logs, revoked_key, bases, stop_at) -> None:
    def at(fraction: float) -> bool:
        while scale.now() < SECONDS * fraction:
            if time.monotonic() > stop_at:
                return False
            time.sleep(0.1)
        return True

    if at(0.30) and cluster is not None:
        failover(scale, cluster, url_node)
    if at(0.55):
        restart_web(scale, webs, env, ports, logs)
    if at(0.80):
        revoke_across_dynos(scale, revoked_key, bases)


class PeakConnections:
    """Polls pg_stat_activity on the server itself (not through PgBouncer): client backends."""

    def __init__(self, url: str):
        self.url, self.peak, self.samples = url, 0, 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopped.is_set():
                n = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()[0]
                self.peak, self.samples = max(self.peak, n), self.samples + 1
                self.stopped.wait(0.25)


# -- the run ---------------------------------------------------------------------------------------


def main() -> int:
    for tool in ("redis-server", "redis-cli", "bash", "/usr/sbin/pgbouncer"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (make system-deps installs it)")
    soak.DRAIN_SECONDS = DRAIN_SECONDS
    # A SIGTERM (a timeout, a CI cancel) stops every server and dyno on the way out too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="lvq-scale-"))
    logs = workdir / "logs"
    logs.mkdir()
    started = time.monotonic()
    postgres = PostgresServer()
    pgbouncer = PgBouncerServer(postgres, pool_size=PG_POOL)
    queues = RedisServer()
    cluster = RedisCluster() if LIMITS == "cluster" else None
    single = RedisServer() if cluster is None else None
    webs: list[subprocess.Popen] = []
    workers: list[subprocess.Popen] = []
    peak = None
    ok = False
    try:
        for server in (postgres, pgbouncer, queues, cluster or single):
            server.start()
        url_node = 0
        if cluster is not None:
            url_node = next(iter(cluster.primaries()))
            limits_url = cluster.url(cluster.ports[url_node])
            print(f"Redis Cluster: 3 primaries + 3 replicas on {cluster.ports} (node timeout {NODE_TIMEOUT_MS} ms)")
        else:
            limits_url = single.url
            print(f"LIMITS Redis: one server on {single.port} (SCALE_LIMITS=single)")
        postgres.create_database("levqor_scale")
        database_url = pgbouncer.url("levqor_scale")
        direct_url = postgres.url("levqor_scale")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV", "VIRTUAL_ENV"))} | {
            "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
            "DATABASE_URL": database_url,
            "DATABASE_PGBOUNCER": "1",
            "REDIS_URL": queues.url,
            "LIMITS_REDIS_URL": limits_url,
            "WEB_CONCURRENCY": WEB_CONCURRENCY,
            "WORKER_CONCURRENCY": WORKER_CONCURRENCY,
            "SECRET_KEY": "scale-" + uuid.uuid4().hex,
            "LEVQOR_VAR_DIR": str(workdir),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "USAGE_FLUSH_SECONDS": str(FLUSH_SECONDS),
        }
        processes = soak.procfile()
        release = subprocess.run(
            ["bash", "-c", processes["release"]], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if release.returncode != 0:
            sys.exit(f"release failed: {release.stderr[-2000:]}")
        seeded = seed(direct_url, KEYS + 1)
        keys, revoked_key = seeded.accounts[:-1], seeded.accounts[-1]
        print(
            f"{KEYS} accounts with a key each seeded by COPY in {seeded.seconds:.1f} s "
            f"({', '.join(f'{n} {t}' for t, n in Counter(a.tier for a in keys).items())})",
            flush=True,
        )

        ports = [free_port() for _ in range(WEB_DYNOS)]
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        webs = [soak.start(processes["web"], web_env(env, p), logs / f"web{i}.log") for i, p in enumerate(ports)]
        workers = [soak.start(processes["worker"], env, logs / f"worker{i}.log") for i in range(WORKER_DYNOS)]
        for base in bases:
            if not wait_for(lambda base=base: healthy(base), 90):
                sys.exit(f"web dyno {base} did not answer /api/health within 90 s")
        print(
            f"{WEB_DYNOS} web dynos on {ports} (WEB_CONCURRENCY={WEB_CONCURRENCY}), {WORKER_DYNOS} worker dynos "
            f"(WORKER_CONCURRENCY={WORKER_CONCURRENCY}), PostgreSQL behind PgBouncer (pool {PG_POOL}); logs in {logs}",
            flush=True,
        )

        peak = PeakConnections(direct_url)
        peak.thread.start()
        router = Router(bases)
        scale = Scale(router)
        print(f"traffic for {SECONDS} s from {CLIENTS} client threads over {len(keys)} keys; faults:", flush=True)
        scale.t0 = time.monotonic()
        deadline = scale.t0 + SECONDS
        shares = [keys[i::CLIENTS] for i in range(CLIENTS)]
        threads = [
            threading.Thread(target=drive, args=(scale, shares[i], deadline, i), daemon=True) for i in range(CLIENTS)
        ]
        injector = threading.Thread(
            target=faults,
            args=(scale, cluster, url_node, webs, env, ports, logs, revoked_key, bases, deadline),
            daemon=True,
        )
        for th in [*threads, injector]:
            th.start()
        for th in threads:
            th.join(timeout=SECONDS + 120)
        injector.join(timeout=120)
        traffic_seconds = scale.now()

        job_ids = [j for a in keys for j in a.jobs]
        rows = soak.drain(direct_url, job_ids)
        time.sleep(2 * FLUSH_SECONDS + 1)  # two usage flushes
        called = {c.account.key for c in scale.calls if c.account is not None and c.area in ("v1", "sandbox")}
        used = [a for a in keys if a.key in called]
        usage = read_usage(used, bases)
        peak.stopped.set()
        with psycopg.connect(direct_url, autocommit=True) as conn:
            persisted = {
                account_id: (calls, sandbox_calls)
                for account_id, calls, sandbox_calls in conn.execute(
                    "SELECT account_id, SUM(calls), SUM(sandbox_calls) FROM usage_daily GROUP BY account_id"
                ).fetchall()
            }
        shards = shard_spread(cluster, keys, seeded.ids) if cluster is not None else None
        ok = report(scale, keys, used, seeded.ids, rows, usage, persisted, shards, peak, traffic_seconds, logs, started)
    finally:
        if peak is not None:
            peak.stopped.set()
        for process in [*webs, *workers]:
            soak.stop(process)
        for server in (cluster or single, queues, pgbouncer, postgres):
            with contextlib.suppress(Exception):  # one that never started
                server.close()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nlogs kept in {logs}")
    return 0 if ok else 1


def read_usage(used: list[soak.Account], bases: list[str]) -> dict[str, dict]:
    """GET /api/usage for every used key, spread over the dynos."""

    def one(pair):
        i, account = pair
        response = httpx.get(bases[i % len(bases)] + "/api/usage", headers={"x-api-key": account.key}, timeout=30)
        return account.key, response.json() if response.status_code == 200 else {"error": response.status_code}

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, enumerate(used)))


def shard_spread(cluster: RedisCluster, keys: list[soak.Account], ids: dict[str, int]) -> dict:
    """Accounts per primary, by the slot of the hash tag every key of theirs carries, and the keys
    each primary holds (DBSIZE)."""
    from levqor_core.metering.counters import tag

    owner = {}
    for node, ranges in cluster.primaries().items():
        for start, end in ranges:
            for slot in range(start, end + 1):
                owner[slot] = node
    accounts = Counter(owner[key_slot(f"lvq:{tag(ids[a.email])}:x".encode())] for a in keys)
    dbsize = {}
    for node in accounts:
        with contextlib.suppress(redis.RedisError):
            dbsize[node] = cluster.client(node).dbsize()
    return {
        "accounts": {cluster.ports[n]: c for n, c in accounts.items()},
        "dbsize": {cluster.ports[n]: c for n, c in dbsize.items()},
    }


def degraded_span(logs: Path) -> tuple[int, float]:
    """The web dynos' "gate degraded" warnings (a call served in outage mode after Redis failed
    it): how many, and the seconds from the first to the last."""
    stamps = [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S,%f")
        for log in logs.glob("web*.log")
        for m in re.findall(
            r"^(\S+ \S+) WARNING \S+ redis unavailable, gate degraded", log.read_text(errors="replace"), re.M
        )
    ]
    return len(stamps), (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0


def report(scale, keys, used, ids, rows, usage, persisted, shards, peak, traffic_seconds, logs, started) -> bool:
    calls = scale.calls
    print(
        f"\n== scale: {traffic_seconds:.0f} s of traffic, {len(keys)} keys, "
        f"{WEB_DYNOS} web + {WORKER_DYNOS} worker dynos =="
    )
    metered = [c for c in calls if c.area in ("v1", "sandbox")]
    print(
        f"calls: {len(calls)} ({len(calls) / max(traffic_seconds, 1):.0f}/s; metered {len(metered)}, "
        f"{len(metered) / max(traffic_seconds, 1):.0f}/s); "
        f"statuses {dict(sorted(Counter(c.status for c in calls).items()))}"
    )
    print(f"  router: calls sent to another dyno because one was down: {sum(scale.router.rerouted.values())}")
    fo = scale.failover
    gap = (fo["started"] - 0.5, fo["started"] + (fo["writable_after"] or 60) + 5) if fo else (0, -1)
    # Documented (README, "Redis outage"): sandbox jobs answer 503 while their Redis is down; on a
    # cluster, while their shard fails over.
    documented = [
        c
        for c in calls
        if c.area == "sandbox" and c.status == 503 and c.problem == "service-unavailable" and gap[0] <= c.at <= gap[1]
    ]
    fivexx = [c for c in calls if c.status >= 500 and c not in documented]
    print(f"5xx for valid calls: {len(fivexx)}", end="")
    print(f" (+{len(documented)} documented 503 from sandbox jobs during the failover)" if documented else "")
    for (area, op, status, slug), n in Counter((c.area, c.op, c.status, c.problem) for c in fivexx).most_common(8):
        print(f"    {n:5d} x {status} {slug} on {area} {op}")
    if fivexx:
        print(f"    first at {min(c.at for c in fivexx):.1f}s, last at {max(c.at for c in fivexx):.1f}s")
    no_answer = [c for c in calls if c.status == 0]
    print(f"no answer: {len(no_answer)}")
    for (area, op, err), n in Counter((c.area, c.op, c.error[:90]) for c in no_answer).most_common(4):
        times = ", ".join(f"{c.at:.1f}s" for c in no_answer if (c.area, c.op, c.error[:90]) == (area, op, err))
        print(f"    {n:5d} x {area} {op}: {err} (at {times[:60]})")
    print(f"429: {dict(Counter(c.problem or '?' for c in calls if c.status == 429))}")

    # -- jobs
    submitted = [j for a in keys for j in a.jobs]
    statuses = Counter(rows[j]["status"] if j in rows else "missing" for j in submitted)
    pending = sum(statuses[s] for s in soak.PENDING)
    print(
        f"jobs submitted (202): {len(submitted)}; succeeded {statuses['succeeded']}, failed {statuses['failed']}, "
        f"pending after the drain {pending}, lost {statuses['missing']}"
    )

    # -- usage: counted (GET /api/usage) and persisted (usage_daily) vs admitted, per key
    tally: dict[tuple, Counter] = defaultdict(Counter)
    for c in metered:
        tally[(c.area, soak.admitted(c))][c.account.key] += 1
    totals, mismatched, unpersisted = Counter(), [], []
    for a in used:
        u = usage.get(a.key, {})
        counted, sb_counted = u.get("calls_used", -1), u.get("sandbox", {}).get("calls_today", -1)
        adm, unk = tally[("v1", True)][a.key], tally[("v1", None)][a.key]
        sb_adm, sb_unk = tally[("sandbox", True)][a.key], tally[("sandbox", None)][a.key]
        db_calls, db_sb = persisted.get(ids[a.email], (0, 0))
        totals.update(
            admitted=adm,
            unknown=unk,
            counted=counted,
            persisted=db_calls,
            sb_admitted=sb_adm,
            sb_unknown=sb_unk,
            sb_counted=sb_counted,
            sb_persisted=db_sb,
        )
        if not (adm <= counted <= adm + unk and sb_adm <= sb_counted <= sb_adm + sb_unk):
            mismatched.append(
                f"  {a.email} ({a.tier}): v1 counted {counted} / admitted {adm} (+{unk} unknown); "
                f"sandbox {sb_counted} / {sb_adm} (+{sb_unk}); persisted {db_calls} / {db_sb}; {u.get('error', '')}"
            )
        if (db_calls, db_sb) != (counted, sb_counted):
            unpersisted.append(a)
    print(
        f"\nusage, v1: counted {totals['counted']}, admitted {totals['admitted']} (+{totals['unknown']} unknown), "
        f"persisted {totals['persisted']}"
    )
    print(
        f"usage, sandbox: counted {totals['sb_counted']}, admitted {totals['sb_admitted']} "
        f"(+{totals['sb_unknown']} unknown), persisted {totals['sb_persisted']}"
    )
    print(f"keys used: {len(used)} of {len(keys)}; keys whose counted != admitted: {len(mismatched)}")
    for line in mismatched[:8]:
        print(line)
    rows_for_used = sum(1 for a in used if ids[a.email] in persisted)
    print(
        f"usage rows persisted: {rows_for_used} accounts of {len(used)} used "
        f"({len(unpersisted)} whose usage_daily != counted)"
    )

    # -- shards, failover, PostgreSQL, revocation
    skew = None
    if shards:
        counts = list(shards["accounts"].values())
        skew = max(counts) / (sum(counts) / len(counts))
        print(f"\nkeys per shard (accounts by hash-tag slot): {shards['accounts']}, max/mean {skew:.2f}")
        print(f"  Redis keys per primary at the end (DBSIZE): {shards['dbsize']}")
    if fo:
        print(
            f"failover: primary :{fo['victim_port']} SIGKILLed at {fo['started']:.1f}s; its slots writable "
            f"again after {fo['writable_after'] or float('nan'):.1f} s, "
            f"cluster_state ok after {fo['state_ok_after'] or float('nan'):.1f} s"
        )
        warnings, span = degraded_span(logs)
        print(f"  outage mode on the web dynos: {warnings} 'gate degraded' warnings over {span:.1f} s")
        window = [c for c in metered if fo["started"] <= c.at <= fo["started"] + (fo["writable_after"] or 60)]
        print(f"  metered calls during the gap: {len(window)}, statuses {dict(Counter(c.status for c in window))}")
    print(f"peak PostgreSQL server connections: {peak.peak} ({peak.samples} samples of pg_stat_activity)")
    rv = scale.revocation
    revocation_ok = (
        bool(rv) and rv["revoke"] == 200 and all(s == 200 for s in rv["before"]) and all(s == 401 for s in rv["after"])
    )
    print(f"revocation: {rv or 'not run'}")

    print("\nprocess logs:")
    for line in soak.summarise_logs(logs):
        print("  " + line)
    print(f"\nwhole run {time.monotonic() - started:.0f} s")
    targets = {
        "0 5xx for valid calls": not fivexx,
        "counted = admitted (every key, v1 and sandbox)": not mismatched,
        "every used key's usage persisted": not unpersisted and rows_for_used == len(used),
        "revoked on one dyno, refused on every dyno at the next call": revocation_ok,
        "0 lost jobs": statuses["missing"] == 0 and pending == 0,
    }
    if skew is not None:
        targets[f"no shard above {MAX_SHARD_SKEW}x the mean of keys"] = skew <= MAX_SHARD_SKEW
    for name, met in targets.items():
        print(f"{'PASS' if met else 'FAIL'}  {name}")
    return all(targets.values())


if __name__ == "__main__":
    sys.exit(main())
