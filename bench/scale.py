"""Scale run with faults: the hot path on a Redis Cluster, queues on a Redis of their own,
PgBouncer in front of PostgreSQL, three web dynos and two worker dynos, many keys.

    make bench-scale                # or: SCALE_SECONDS=30 SCALE_KEYS=2000 .venv/bin/python bench/scale.py

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
4. drives mixed traffic for SCALE_SECONDS (60) from SCALE_CONNECTIONS (48) keep-alive connections
   on one event loop (HTTP/1.1 by hand: the driver must not take the dynos' CPU): every key once
   in a shuffled order (one metered call each), a key none of whose calls was admitted (no answer,
   a 503 mid-failover) again, then random keys one or two calls at a time; past SCALE_SECONDS
   (up to SCALE_MAX_SECONDS, 240) until every key has had a call admitted. Each call goes through
   a "router" to a random dyno and, when the dyno refuses the connection (it is down), to the
   next: the workflow catalogue, job lists, an unknown job (404) and workflow (400) the gate
   counts, a few v1 jobs (`echo`, `text-stats`) and their reads, sandbox calls and jobs,
   GET /api/usage;
5. meanwhile, at 30 %, SIGKILLs one cluster primary (not the node LIMITS_REDIS_URL names), whose
   replica is promoted, and starts it again 10 s later (it rejoins as a replica); at 55 %
   SIGTERMs one web dyno's whole process group and starts the Procfile's `web` line again on the
   same port; at 80 % revokes a key with DELETE /api/key on one dyno after it was used on every
   dyno, and calls with it on the others at once;
6. drains the jobs, waits two usage flushes, reads `usage_daily` and compares it per key with the
   calls the dynos admitted, for every key; and reads GET /api/usage for SCALE_USAGE_SAMPLE (2,000)
   keys and every key with a call of unknown outcome, and compares it with `usage_daily`.

It prints calls/s, 5xx for valid calls, counted vs admitted (per key, summed, keys mismatched),
keys per shard (max / mean), the failover gap (seconds from the SIGKILL until the cluster answers
writes to the shard again, and the web dynos' "gate degraded" warnings), the peak of PostgreSQL
server connections (pg_stat_activity, polled), usage rows persisted vs keys used, and the
revocation check. It exits 1 when a target is missed: 0 5xx for valid calls, counted = admitted
on every key, every key called and its usage persisted, the revoked key refused on every dyno at its next
call, no shard holding more than 1.3x the mean of keys, 0 lost jobs.
"""

import asyncio
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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import psycopg
import redis
from redis.crc import key_slot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import soak  # noqa: E402  (the soak run's processes, calls and reconciliation)
from levqor_core.keys.format import generate, hash_key, hint  # noqa: E402
from tests.servers import PgBouncerServer, PostgresServer, RedisServer, free_port, wait_for  # noqa: E402

SECONDS = int(os.environ.get("SCALE_SECONDS", 60))
# GET /api/usage read back for this many keys (and every key with a call of unknown outcome):
# for all 20,000 it would take longer than the traffic; usage_daily is checked for every key.
USAGE_SAMPLE = int(os.environ.get("SCALE_USAGE_SAMPLE", 2000))
# Traffic goes on past SECONDS until every key has had a call admitted, up to this.
MAX_SECONDS = int(os.environ.get("SCALE_MAX_SECONDS", 240))
KEYS = int(os.environ.get("SCALE_KEYS", 20000))
CONNECTIONS = int(os.environ.get("SCALE_CONNECTIONS", 48))
WEB_DYNOS = int(os.environ.get("SCALE_WEB_DYNOS", 3))
WORKER_DYNOS = int(os.environ.get("SCALE_WORKER_DYNOS", 2))
WEB_CONCURRENCY = os.environ.get("SCALE_WEB_CONCURRENCY", "1")
WORKER_CONCURRENCY = os.environ.get("SCALE_WORKER_CONCURRENCY", "2")
LIMITS = os.environ.get("SCALE_LIMITS", "cluster")  # cluster | single
PG_POOL = int(os.environ.get("SCALE_PG_POOL", 20))
DRAIN_SECONDS = int(os.environ.get("SCALE_DRAIN_SECONDS", 90))
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


class Dynos:
    """The platform's router: a call goes to a random dyno; a dyno that refuses the connection (it
    is down) is skipped, as the router stops sending to a stopped dyno. Nothing was sent then, so
    the call is not of unknown outcome."""

    def __init__(self, ports: list[int]):
        self.ports = ports
        self.rerouted = Counter()  # port -> calls sent elsewhere


class Lane:
    """One client of many on one event loop: a keep-alive HTTP/1.1 connection to each dyno, opened
    on first use and again after a loss. HTTP by hand (a request line, headers, a Content-Length
    or chunked body): httpx's clients cost more CPU a call than a dyno spends serving it, and the
    driver shares the machine's two cores with the dynos."""

    def __init__(self, dynos: Dynos):
        self.dynos = dynos
        self.connections: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self.used: dict[int, float] = {}  # port -> when its connection was last used

    async def _connection(self, port: int):
        connection = self.connections.get(port)
        idle = time.monotonic() - self.used.get(port, 0.0)
        self.used[port] = time.monotonic()
        # gunicorn closes a keep-alive connection idle for 2 s (its `keepalive`): a request written
        # as it does is reset, of unknown outcome. One idle for 1 s is not reused.
        if connection is not None and idle < 1.0 and not connection[0].at_eof() and not connection[1].is_closing():
            return connection
        self._drop(port)
        connection = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
        self.connections[port] = connection
        return connection

    def _drop(self, port: int) -> None:
        connection = self.connections.pop(port, None)
        if connection is not None:
            connection[1].close()

    async def exchange(self, port: int, request: bytes) -> tuple[int, dict, bytes]:
        """Send one request on the dyno's connection and read its response (raises
        ConnectionRefusedError before anything is sent, another OSError after)."""
        reader, writer = await self._connection(port)
        try:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "content-length" in headers:
                body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            else:
                body = await asyncio.wait_for(reader.read(), 30)
                self._drop(port)
            if headers.get("connection", "").lower() == "close":
                self._drop(port)
            return status, headers, body
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            self._drop(port)
            raise

    def close(self) -> None:
        for port in list(self.connections):
            self._drop(port)


def http_request(method: str, path: str, port: int, key: str, body: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"x-api-key: {key}"]
    payload = b""
    if body is not None:
        payload = json.dumps(body).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


class Scale(soak.Soak):
    def __init__(self, dynos: Dynos):
        super().__init__()
        self.dynos = dynos
        self.revocation: dict = {}
        self.failover: dict = {}
        self.walk: Walk | None = None
        self.wall0 = 0.0  # time.time() when the traffic started (the dynos' logs are in wall time)

    async def routed(self, lane: Lane, account, area, op, method, path, rnd, body=None):
        """One call through the router; recorded, and its (status, parsed JSON body or None) returned."""
        ports = self.dynos.ports
        first = rnd.randrange(len(ports))
        for step in range(len(ports)):
            port = ports[(first + step) % len(ports)]
            at = self.now()
            try:
                status, headers, raw = await lane.exchange(port, http_request(method, path, port, account.key, body))
            except ConnectionRefusedError:
                self.dynos.rerouted[port] += 1
                continue
            except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as err:
                self.calls.append(soak.Call(account, area, op, 0, "", at, f"{type(err).__name__}: {err}"))
                return 0, None
            parsed, slug = None, ""
            if headers.get("content-type", "").startswith(("application/json", "application/problem+json")):
                with contextlib.suppress(ValueError):
                    parsed = json.loads(raw)
            if headers.get("content-type", "").startswith("application/problem+json"):
                slug = parsed.get("type", "").rsplit("/", 1)[-1] if isinstance(parsed, dict) else "?"
            call = soak.Call(account, area, op, status, slug, at)
            self.calls.append(call)
            if area in ("v1", "sandbox") and soak.admitted(call) and self.walk is not None:
                self.walk.admitted.add(account.key)
            return status, parsed
        self.calls.append(soak.Call(account, area, op, 0, "", self.now(), "ConnectError: every dyno down"))
        return 0, None


class Walk:
    """The keys for the lanes: every key once, in a shuffled order (the first pass), then any key
    whose calls so far were none admitted (no answer, a 503 mid-failover) again, then random keys
    until the deadline."""

    def __init__(self, keys: list[soak.Account], seed_: int):
        self.order = list(keys)
        self.rnd = random.Random(seed_)
        self.rnd.shuffle(self.order)
        self.handed = 0
        self.admitted: set[str] = set()  # keys with at least one metered call admitted
        self.again: list[soak.Account] = []

    def next(self) -> tuple[soak.Account, bool]:
        """The next key, and whether it is its first visit."""
        self.handed += 1
        if self.handed <= len(self.order):
            return self.order[self.handed - 1], True
        if self.again:
            return self.again.pop(), True
        return self.rnd.choice(self.order), False

    def visited(self, account: soak.Account) -> None:
        if account.key not in self.admitted:
            self.again.append(account)

    @property
    def complete(self) -> bool:
        """Every key visited, and every key with a call admitted (or on its way to one)."""
        return self.handed >= len(self.order) and not self.again


# A key's visit: one or two calls drawn by these weights (metered v1 and sandbox calls, a 404 and a
# 400 the gate counts, GET /api/usage); few create jobs, so the workers drain in seconds.
# A first visit makes one metered call (not GET /api/usage), so one pass calls every key.
ACTIONS = {
    "workflows": 30,
    "list jobs": 10,
    "get job": 4,
    "unknown job (404)": 6,
    "unknown workflow (400)": 4,
    "create echo": 0.5,
    "create text-stats": 0.2,
    "sandbox workflows": 8,
    "sandbox create echo": 3,
    "sandbox get job": 3,
    "usage": 4,
}


METERED_ACTIONS = {name: weight for name, weight in ACTIONS.items() if name != "usage"}


async def visit(scale: Scale, lane: Lane, account: soak.Account, rnd: random.Random, first: bool) -> None:
    def call(area, op, method, path, body=None):
        return scale.routed(lane, account, area, op, method, path, rnd, body)

    mix = METERED_ACTIONS if first else ACTIONS
    action = rnd.choices(list(mix), list(mix.values()))[0]
    if action == "get job" and account.jobs:
        await call("v1", action, "GET", f"/api/v1/jobs/{rnd.choice(account.jobs)}")
    elif action == "list jobs":
        await call("v1", action, "GET", "/api/v1/jobs?limit=10")
    elif action == "unknown job (404)":
        await call("v1", action, "GET", "/api/v1/jobs/job_" + "0" * 20)
    elif action == "unknown workflow (400)":
        await call("v1", action, "POST", "/api/v1/jobs", {"workflow": "nope", "input": {}})
    elif action in ("create echo", "create text-stats"):
        workflow = action.split()[1]
        data = {"n": rnd.randrange(10**6), "from": account.email} if workflow == "echo" else {"text": soak.TEXT}
        status, body = await call("v1", action, "POST", "/api/v1/jobs", {"workflow": workflow, "input": data})
        if status == 202 and body:
            account.jobs.append(body["id"])
            scale.jobs_submitted[workflow] += 1
    elif action == "sandbox workflows":
        await call("sandbox", "workflows", "GET", "/api/sandbox/v1/workflows")
    elif action == "sandbox create echo":
        status, body = await call(
            "sandbox", "create echo", "POST", "/api/sandbox/v1/jobs", {"workflow": "echo", "input": {"n": 1}}
        )
        if status == 202 and body:
            account.sandbox_jobs.append(body["id"])
    elif action == "sandbox get job" and account.sandbox_jobs:
        await call("sandbox", "get job", "GET", f"/api/sandbox/v1/jobs/{rnd.choice(account.sandbox_jobs)}")
    elif action == "usage":
        await call("meta", "usage", "GET", "/api/usage")
    else:
        await call("v1", "workflows", "GET", "/api/v1/workflows")


async def drive(scale: Scale, walk: Walk, deadline: float, hard_deadline: float) -> None:
    """CONNECTIONS lanes walking the keys together until the deadline, and past it (up to
    hard_deadline) until every key has had a call admitted."""

    async def lane_loop(i: int) -> None:
        rnd, lane = random.Random(i), Lane(scale.dynos)
        try:
            while True:
                now = time.monotonic()
                if now >= hard_deadline or (now >= deadline and walk.complete):
                    return
                account, first = walk.next()
                # A first visit is one call (the pass is what bounds the run), a later one one or two.
                for _ in range(1 if first else rnd.choice((1, 2))):
                    await visit(scale, lane, account, rnd, first)
                walk.visited(account)
        finally:
            lane.close()

    await asyncio.gather(*(lane_loop(i) for i in range(CONNECTIONS)))


async def read_usage(used: list[soak.Account], ports: list[int]) -> dict[str, dict]:
    """GET /api/usage for every used key, over CONNECTIONS lanes spread over the dynos."""
    out: dict[str, dict] = {}
    pending = list(enumerate(used))

    async def lane_loop() -> None:
        lane = Lane(Dynos(ports))
        try:
            while pending:
                i, account = pending.pop()
                port = ports[i % len(ports)]
                for _ in range(3):  # a connection the dyno closed meanwhile: once more on a new one
                    try:
                        status, _, raw = await lane.exchange(port, http_request("GET", "/api/usage", port, account.key))
                        out[account.key] = json.loads(raw) if status == 200 else {"error": status}
                        break
                    except (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError) as err:
                        out[account.key] = {"error": f"{type(err).__name__}: {err}"}
        finally:
            lane.close()

    await asyncio.gather(*(lane_loop() for _ in range(CONNECTIONS)))
    return out


# -- faults and probes -----------------------------------------------------------------------------


def cpu_seconds(processes: list[subprocess.Popen]) -> dict[int, float]:
    """User and system CPU of each live process of these dynos (gunicorn masters and workers), by pid."""
    seconds = {}
    for process in processes:
        for p in soak.tree(process.pid):
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                seconds[p.pid] = times.user + times.system
    return seconds


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
            f"({', '.join(f'{n} {t}' for t, n in Counter(a.tier for a in keys).items())}); "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
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
        scale = Scale(Dynos(ports))
        print(
            f"traffic for {SECONDS} s (longer, up to {MAX_SECONDS} s, until every key has a call admitted) from "
            f"{CONNECTIONS} connections over {len(keys)} keys; faults:",
            flush=True,
        )
        walk = scale.walk = Walk(keys, seed_=1)
        scale.t0, scale.wall0 = time.monotonic(), time.time()
        deadline = scale.t0 + SECONDS
        injector = threading.Thread(
            target=faults,
            args=(scale, cluster, url_node, webs, env, ports, logs, revoked_key, bases, deadline),
            daemon=True,
        )
        injector.start()
        harness_cpu, web_cpu = time.process_time(), cpu_seconds(webs)
        asyncio.run(drive(scale, walk, deadline, scale.t0 + MAX_SECONDS))
        traffic_seconds = scale.now()
        harness_cpu = time.process_time() - harness_cpu
        web_cpu = sum(t - web_cpu.get(pid, 0.0) for pid, t in cpu_seconds(webs).items())
        print(
            f"  [{traffic_seconds:5.1f}s] traffic stopped: {len(walk.admitted)} of {len(keys)} keys with a call "
            f"admitted, {walk.handed} visits, {len(scale.calls)} calls; CPU: the web dynos' {web_cpu:.0f} s "
            f"({1000 * web_cpu / max(len(scale.calls), 1):.1f} ms a call; the restarted one's start-up included), "
            f"this harness's {harness_cpu:.0f} s; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}",
            flush=True,
        )
        injector.join(timeout=120)

        job_ids = [j for a in keys for j in a.jobs]
        rows = soak.drain(direct_url, job_ids)
        time.sleep(2 * FLUSH_SECONDS + 1)  # two usage flushes
        called = {c.account.key for c in scale.calls if c.account is not None and c.area in ("v1", "sandbox")}
        used = [a for a in keys if a.key in called]
        uncertain = {c.account.key for c in scale.calls if c.account is not None and soak.admitted(c) is None}
        sample = random.Random(2).sample(used, min(USAGE_SAMPLE, len(used)))
        sampled = {a.key for a in sample}
        sample += [a for a in used if a.key in uncertain and a.key not in sampled]
        usage = asyncio.run(read_usage(sample, ports))
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


def degraded_warnings(logs: Path, wall0: float) -> list[tuple[float, str]]:
    """The web dynos' "gate degraded" warnings (a call served in outage mode after Redis failed
    it): (seconds into the traffic, reason) each."""
    found = re.findall(
        r"^(\S+ \S+) WARNING \S+ redis unavailable, gate degraded: (.*)$",
        "\n".join(log.read_text(errors="replace") for log in logs.glob("web*.log")),
        re.M,
    )
    return [(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - wall0, why) for stamp, why in found]


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
    print(f"  router: calls sent to another dyno because one was down: {sum(scale.dynos.rerouted.values())}")
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

    # -- usage: persisted (usage_daily, flushed from the gate's counters) vs admitted, every key; GET
    # /api/usage (the counters as the API reports them) vs persisted, for a sample of keys
    tally: dict[tuple, Counter] = defaultdict(Counter)
    for c in metered:
        tally[(c.area, soak.admitted(c))][c.account.key] += 1
    totals, mismatched, api_differs = Counter(), [], []
    for a in used:
        adm, unk = tally[("v1", True)][a.key], tally[("v1", None)][a.key]
        sb_adm, sb_unk = tally[("sandbox", True)][a.key], tally[("sandbox", None)][a.key]
        db_calls, db_sb = persisted.get(ids[a.email], (0, 0))
        totals.update(
            admitted=adm, unknown=unk, persisted=db_calls, sb_admitted=sb_adm, sb_unknown=sb_unk, sb_persisted=db_sb
        )
        if not (adm <= db_calls <= adm + unk and sb_adm <= db_sb <= sb_adm + sb_unk):
            mismatched.append(
                f"  {a.email} ({a.tier}): v1 persisted {db_calls} / admitted {adm} (+{unk} unknown); "
                f"sandbox {db_sb} / {sb_adm} (+{sb_unk})"
            )
        if a.key in usage:
            u = usage[a.key]
            counted = (u.get("calls_used", -1), u.get("sandbox", {}).get("calls_today", -1))
            totals.update(sampled_counted=counted[0], sampled_persisted=db_calls)
            if counted != (db_calls, db_sb):
                api_differs.append(f"  {a.email}: /api/usage {counted}, usage_daily {(db_calls, db_sb)} {u}")
    print(f"\nusage, v1: persisted {totals['persisted']}, admitted {totals['admitted']} (+{totals['unknown']} unknown)")
    print(
        f"usage, sandbox: persisted {totals['sb_persisted']}, admitted {totals['sb_admitted']} "
        f"(+{totals['sb_unknown']} unknown)"
    )
    print(f"keys called: {len(used)} of {len(keys)}; keys whose persisted != admitted: {len(mismatched)}")
    for line in mismatched[:8]:
        print(line)
    rows_for_used = sum(1 for a in used if ids[a.email] in persisted)
    print(f"usage rows persisted: {rows_for_used} accounts of {len(keys)}")
    print(
        f"GET /api/usage for {len(usage)} keys (a sample, and every key with a call of unknown outcome): "
        f"v1 counted {totals['sampled_counted']} = persisted {totals['sampled_persisted']}; "
        f"keys whose counters differ from usage_daily: {len(api_differs)}"
    )
    for line in api_differs[:8]:
        print(line)

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
        warnings = degraded_warnings(logs, scale.wall0)
        end = fo["started"] + (fo["writable_after"] or 60) + 1
        during = [at for at, _ in warnings if fo["started"] - 1 <= at <= end]
        print(
            f"  outage mode on the web dynos: {len(during)} 'gate degraded' warnings over "
            f"{(max(during) - min(during)) if during else 0:.1f} s of the failover (that shard's accounts served "
            f"from the database)"
        )
        others = Counter(why[:60] for at, why in warnings if not fo["started"] - 1 <= at <= end)
        if others:
            print(f"  and outside it: {dict(others)} (a loaded machine's slow replies: served from the database too)")
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
        "GET /api/usage = usage_daily (the sample)": not api_differs and bool(usage),
        f"every key called ({len(used)} of {len(keys)})": len(used) == len(keys),
        f"every key's usage persisted ({rows_for_used} of {len(keys)})": rows_for_used == len(used) == len(keys),
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
