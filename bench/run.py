"""The app's own overhead, and the candidate hosts for its API, measured against peers in one run.

    make bench                      # or: .venv/bin/python bench/run.py [--rounds 3] [--seconds 5] [--keys 32]
    BENCH_SECONDS=3 BENCH_ROUNDS=2 make bench     # a shorter run

Starts, side by side and each with 2 server processes:
  - plain Flask:     bench/peers/plain_flask.py, one view, gunicorn gthread workers;
  - plain FastAPI:   bench/peers/fastapi_plain.py, one `async def` operation;
  - naive FastAPI:   bench/peers/fastapi_naive.py, the stack an API like this is often first written
                     as: slowapi's per-key limit on Redis, a SQL key lookup (the app's `api_keys`
                     table) and a Redis INCR per call, serving GET /api/v1/workflows;
  - bare FlaskApp:   bench/peers/bare_connexion/, a Connexion 3 FlaskApp with one operation from a
                     tiny spec (Connexion's defaults);
  - bare AsyncApp:   bench/peers/bare_asyncapp/, the same spec on Connexion's AsyncApp, `async def`;
  - the app as shipped: the Procfile's web line (gunicorn, uvicorn workers, wsgi:app) against real
                     PostgreSQL and Redis (tests/servers.py), migrated by the Procfile's release line;
  - AsyncApp + real edge: bench/peers/asyncapp_edge.py, a prototype of the API on AsyncApp with the
                     app's request guard, gate, problem bodies and headers (docs/decisions/0014-api-host.md);
                     served twice: as Connexion builds it, and with AsyncApp's per-call decorator
                     building done once per operation (`asyncapp_edge:app_built_once`, a lever).
The peers are started from the same Procfile line, only the module (and for plain Flask the worker
class) replaced, so gunicorn's settings (access log included) are the same for all.

Accounts, Enterprise keys and one job per key are made through the app's own HTTP interface (sign-up
and key creation on the portal, POST /api/v1/jobs), the tier set in the database as bench/soak.py
does: nothing here imports the app's packages.

wrk (-t2, on loopback) drives, at heavy (-c32) and light (-c4) load (--loads), alternating targets
round by round: the peers' hellos, the naive stack's key-checked read, the app's GET /api/health,
the authorised + limited + metered GET /api/v1/workflows spread over --keys Enterprise keys and
GET /api/v1/jobs/{id} (the job poll), and the same three on the AsyncApp prototype. A Lua script
counts every response outside 2xx; psutil reads the server tree's CPU time before and after each
run, so each target also gets its CPU per request as served (HTTP parsing, socket writes and the
access log included), which holds much steadier than req/s when other work shares the machine.
Each figure is the median of --rounds rounds; the ratios that matter (to plain FastAPI, to bare
FlaskApp, to bare AsyncApp, to the naive stack), by req/s and by CPU per request, are printed with
the goals of issues 16 and 28. Absolute numbers on a shared machine are noise; the ratios, taken in
the same run, are the figures. wrk shares the machine's cores with the servers.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests import signup  # noqa: E402
from tests.servers import PostgresServer, RedisServer, free_port  # noqa: E402

LOADS = (32, 4)  # wrk connections: heavy, light (--loads)
# (target, peer, at least): req/s ratios at the heaviest load, each target with 0 non-2xx.
GOALS = (
    ("health", "connexion", 0.9),  # issue 16
    ("v1", "connexion", 0.7),  # issue 16
    ("v1", "fastapi", 0.5),  # issue 28
    ("health", "fastapi", 0.5),  # issue 28
    ("job", "connexion", 0.8),  # issue 28
    ("edge_v1", "fastapi", 0.5),  # issue 28, on the AsyncApp prototype
    ("edge_health", "fastapi", 0.5),
    ("edge_job", "connexion", 0.8),
    ("once_v1", "fastapi", 0.5),  # the same, AsyncApp's decorators built once per operation
    ("once_health", "fastapi", 0.5),
    ("once_job", "connexion", 0.8),
)
PEERS_BY_NAME = {
    "fastapi": "plain FastAPI",
    "asyncapp": "bare AsyncApp",
    "connexion": "bare FlaskApp",
    "flask": "plain Flask",
    "naive": "naive FastAPI",
}

# Cycles through "key path" lines ("-" for no key); counts non-2xx per thread and reports one JSON
# line from done(). Used for every target alike, so wrk does the same work per request for each.
LUA = """
local targets = {}
for line in io.lines(@LISTING@) do
  local key, path = line:match("([^ ]+) ([^ ]+)")
  targets[#targets + 1] = {key, path}
end
local threads = {}
function setup(thread)
  thread:set("offset", #threads * 7)
  threads[#threads + 1] = thread
end
n = 0
non2xx = 0
statuses = {}
function init(args)
  n = offset or 0
end
function request()
  n = n + 1
  local t = targets[(n % #targets) + 1]
  if t[1] == "-" then return wrk.format("GET", t[2]) end
  return wrk.format("GET", t[2], {["x-api-key"] = t[1]})
end
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local s = tostring(status)
    statuses[s] = (statuses[s] or 0) + 1
  end
end
function done(summary, latency, requests)
  local bad, by = 0, {}
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    for s, c in pairs(t:get("statuses")) do by[s] = (by[s] or 0) + c end
  end
  local parts = {}
  for s, c in pairs(by) do parts[#parts + 1] = string.format('"%s": %d', s, c) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, ' ..
    '"statuses": {%s}, "socket_errors": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), bad,
    table.concat(parts, ", "), e.connect + e.read + e.write + e.timeout))
end
"""


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def web_argv(port: int, workers: int, module: str | None = None, chdir: Path | None = None, gthread=False) -> list:
    """The Procfile's web line as an argv, bound to loopback:port with `workers` processes; for a peer,
    its module (and directory) instead of wsgi:app and, for plain Flask, gthread workers."""
    values = {"PORT": str(port), "WEB_CONCURRENCY": str(workers)}
    line = re.sub(r"\$\{(\w+)(?::-[^}]*)?\}|\$(\w+)", lambda m: values[m.group(1) or m.group(2)], procfile()["web"])
    argv = shlex.split(line)
    if argv[0] == "gunicorn":
        argv[0] = str(VENV_BIN / "gunicorn")
    for i, arg in enumerate(argv):
        if arg in ("-b", "--bind"):
            argv[i + 1] = f"127.0.0.1:{port}"
        elif arg.startswith("--bind="):
            argv[i] = f"--bind=127.0.0.1:{port}"
    if module:
        argv[argv.index("wsgi:app")] = module
        argv[1:1] = ["--chdir", str(chdir)]
    if gthread:
        k = argv.index("-k")
        argv[k : k + 2] = ["-k", "gthread", "--threads", "10"]
    return argv


def start(argv: list, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # gunicorn's master stops its workers
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_up(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{url} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"{url} did not answer 200 within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def sign_up(base: str, database_url: str, i: int) -> tuple[str, str]:
    """A developer as a browser makes one: sign up, confirm, log in, then create a key on the portal;
    (email, raw key). Each comes from its own address (TEST-NET-3) as the router appends it: sign-up
    and log-in are limited per address."""
    with httpx.Client(base_url=base, timeout=60, headers={"X-Forwarded-For": f"203.0.113.{i % 250 + 1}"}) as web:
        email = f"bench-{i}@example.com"
        confirm = signup.confirm_in_database
        return email, signup.developer_with_key(base, email, lambda _web, address: confirm(database_url, address), web)


def prepare(base: str, database_url: str, keys: int) -> list[tuple[str, str]]:
    """`keys` Enterprise accounts with a key and one job each; [(raw key, job id)]."""
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: sign_up(base, database_url, i), range(keys)))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET tier = 'enterprise' WHERE email = ANY(%s)", ([e for e, _ in made],))
    pairs = []
    with httpx.Client(base_url=base, timeout=30) as api:
        for i, (_, key) in enumerate(made):
            job = api.post("/api/v1/jobs", json={"workflow": "echo", "input": {"i": i}}, headers={"x-api-key": key})
            if job.status_code != 202:
                raise RuntimeError(f"job for key {i}: {job.status_code} {job.text[:300]}")
            pairs.append((key, job.json()["id"]))
        # Every key is on Enterprise's burst limit, not the sign-up tier's (a cached record would not be).
        seen = api.get("/api/v1/workflows", headers={"x-api-key": made[0][1]})
        if seen.status_code != 200:
            raise RuntimeError(f"GET /api/v1/workflows: {seen.status_code} {seen.text[:300]}")
    return pairs


def tree_cpu_seconds(process: subprocess.Popen) -> float:
    """User + system CPU of a server's whole tree (gunicorn's master and workers) so far, exited
    descendants included."""
    total = 0.0
    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return total
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        # children_*: descendants that exited and were waited for (RQ's work horses, bench/jobs.py)
        total += times.user + times.system + times.children_user + times.children_system
    return total


def served_wrk(server: subprocess.Popen, url: str, listing: Path, seconds: int, connections: int) -> dict:
    """wrk against a served target, with the server tree's CPU per request (µs) over the run: it holds
    steadier than req/s when other work shares the machine, and includes what the server process
    really does per request (HTTP parsing, socket writes, the access log), unlike bench/cpu.py."""
    before = tree_cpu_seconds(server)
    result = wrk(url, listing, seconds, connections)
    cpu = tree_cpu_seconds(server) - before
    return result | {"cpu_us": cpu / max(result["requests"], 1) * 1e6}


def wrk(url: str, listing: Path, seconds: int, connections: int) -> dict:
    script = listing.with_suffix(".lua")
    if not script.exists():
        script.write_text(LUA.replace("@LISTING@", json.dumps(str(listing))))
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        sys.exit(f"wrk failed ({done.returncode}) on {url}:\n{done.stdout}\n{done.stderr}")
    r = json.loads(line[6:])
    return r | {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50_us"] / 1000, "p99": r["p99_us"] / 1000}


def table(results: dict, names: dict, loads: tuple) -> dict[str, bool]:
    def med(name, c, field):
        return statistics.median(r[field] for r in results[name][c])

    def non2xx(name):
        return sum(r["non2xx"] for c in loads for r in results[name][c])

    heads = " | ".join(f"{'c' + str(c) + ' req/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs':>7}" for c in loads)
    print(f"\n{'target':44} {heads}  {'non-2xx':>7}  {'socket errors':>13}")
    for name, label in names.items():
        cells = " | ".join(
            f"{med(name, c, 'rps'):11.0f} {med(name, c, 'p50'):7.2f} {med(name, c, 'p99'):7.2f} "
            f"{med(name, c, 'cpu_us'):7.0f}"
            for c in loads
        )
        errors = sum(r["socket_errors"] for c in loads for r in results[name][c])
        print(f"{label:44} {cells}  {non2xx(name):7d}  {errors:13d}")
        statuses: dict[str, int] = {}
        for c in loads:
            for r in results[name][c]:
                for s, n in r["statuses"].items():
                    statuses[s] = statuses.get(s, 0) + n
        if statuses:
            print(f"{'':44}   non-2xx by status: {statuses}")

    print(f"\nreq/s each round ({'; '.join(f'c{c}' for c in loads)}):")
    for name, label in names.items():
        rounds = "; ".join(" ".join(f"{r['rps']:.0f}" for r in results[name][c]) for c in loads)
        print(f"  {label:46} {rounds}")

    peers = [p for p in PEERS_BY_NAME if p in results]
    for c in loads:
        print(f"\nratio of req/s (median), c{c}: ÷ " + ", ÷ ".join(PEERS_BY_NAME[p] for p in peers))
        for name, label in names.items():
            ratios = [(med(name, c, "rps") / med(peer, c, "rps"), len(PEERS_BY_NAME[peer]) + 2) for peer in peers]
            cells = " ".join(f"{ratio:{width}.2f}" for ratio, width in ratios)
            print(f"  {label:46} {cells}")

    print(
        f"\nCPU per request as served (the server tree's CPU over a run ÷ its requests; median), c{loads[0]}: "
        "the peer's ÷ the target's, i.e. the req/s ratio when CPU is what limits"
    )
    print("  " + " " * 46 + " ".join(f"{PEERS_BY_NAME[p]:>{len(PEERS_BY_NAME[p]) + 2}}" for p in peers))
    for name, label in names.items():
        ratios = [
            (med(peer, loads[0], "cpu_us") / med(name, loads[0], "cpu_us"), len(PEERS_BY_NAME[peer]) + 2)
            for peer in peers
        ]
        cells = " ".join(f"{ratio:{width}.2f}" for ratio, width in ratios)
        print(f"  {label:46} {cells}")

    heavy = loads[0]
    print(f"\ngoals (c{heavy}, req/s ratio, the target with 0 non-2xx):")
    verdicts = {}
    for name, peer, floor in GOALS:
        if name not in results or peer not in results:
            continue
        ratio = med(name, heavy, "rps") / med(peer, heavy, "rps")
        met = ratio >= floor and non2xx(name) == 0
        if not name.startswith(("edge_", "once_")):  # the prototype's are shown, not checked (--check)
            verdicts[f"{name}/{peer}"] = met
        verdict = "met" if met else "missed"
        print(f"  {names[name]:46} ÷ {PEERS_BY_NAME[peer]:14} {ratio:5.2f}  goal ≥ {floor}: {verdict}")
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and load (median taken)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--keys", type=int, default=32, help="Enterprise keys the v1 calls are spread over")
    parser.add_argument("--workers", type=int, default=2, help="server processes per server")
    parser.add_argument(
        "--loads", default=",".join(map(str, LOADS)), help="wrk connections, comma-separated (the first: the goals')"
    )
    parser.add_argument(
        "--targets",
        help="only these targets, comma-separated (e.g. fastapi,asyncapp,connexion,v1,edge_v1,once_v1): a "
        "focused run; every server still starts",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when one of the app's goals is missed")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs (their path is printed)")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also serve the app as of git revision REV (a temporary worktree, same database and Redis) and "
        "measure its /api/health, v1 read and job poll in the same rounds: what the changes since REV bought",
    )
    args = parser.parse_args()
    loads = tuple(int(c) for c in args.loads.split(","))
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: make bench installs it")
    t0 = time.monotonic()

    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="lvq-bench-"))
    servers: dict[str, subprocess.Popen] = {}
    try:
        database_url = postgres.create_database("levqor_bench")
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV", "VIRTUAL_ENV"))}
        base_env["PATH"] = f"{VENV_BIN}:{os.environ['PATH']}"
        env = base_env | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "bench",
            "LEVQOR_VAR_DIR": str(workdir),
            "FLASK_APP": "wsgi:flask_app",
        }
        release = subprocess.run(
            ["bash", "-c", procfile()["release"]], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if release.returncode != 0:
            sys.exit(f"release failed:\n{release.stdout[-2000:]}\n{release.stderr[-2000:]}")

        servers_ = ("app", "edge", "once", "connexion", "asyncapp", "fastapi", "naive", "flask", "before")
        ports = {name: free_port() for name in servers_}
        argvs = {
            "app": web_argv(ports["app"], args.workers),
            "edge": web_argv(ports["edge"], args.workers, "asyncapp_edge:app", PEERS),
            "once": web_argv(ports["once"], args.workers, "asyncapp_edge:app_built_once", PEERS),
            "connexion": web_argv(ports["connexion"], args.workers, "server:app", PEERS / "bare_connexion"),
            "asyncapp": web_argv(ports["asyncapp"], args.workers, "server:app", PEERS / "bare_asyncapp"),
            "fastapi": web_argv(ports["fastapi"], args.workers, "fastapi_plain:app", PEERS),
            "naive": web_argv(ports["naive"], args.workers, "fastapi_naive:app", PEERS),
            "flask": web_argv(ports["flask"], args.workers, "plain_flask:app", PEERS, gthread=True),
        }
        with_app_env = ("app", "before", "edge", "once", "naive")  # the app's database and Redis
        if args.compare:
            before_tree = workdir / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.compare], cwd=ROOT, check=True)
            argvs["before"] = web_argv(ports["before"], args.workers, "wsgi:app", before_tree)
        for name, argv in argvs.items():
            servers[name] = start(argv, env if name in with_app_env else base_env, workdir / f"{name}.log")
        for name in argvs:
            wait_up(f"http://127.0.0.1:{ports[name]}/api/health", servers[name], workdir / f"{name}.log")
        app = f"http://127.0.0.1:{ports['app']}"
        pairs = prepare(app, database_url, args.keys)
        setup_seconds = time.monotonic() - t0

        names = {
            "fastapi": "plain FastAPI (async def)",
            "asyncapp": "bare Connexion AsyncApp (async def)",
            "connexion": "bare Connexion FlaskApp",
            "flask": "plain Flask (gthread)",
            "naive": f"naive FastAPI GET /api/v1/workflows ({args.keys} keys)",
            "health": "app GET /api/health",
            "v1": f"app GET /api/v1/workflows ({args.keys} keys)",
            "job": "app GET /api/v1/jobs/{id}",
            "edge_health": "AsyncApp + real edge GET /api/health",
            "edge_v1": "AsyncApp + real edge GET /api/v1/workflows",
            "edge_job": "AsyncApp + real edge GET /api/v1/jobs/{id}",
            "once_health": "… decorators built once: /api/health",
            "once_v1": "… decorators built once: /api/v1/workflows",
            "once_job": "… decorators built once: /api/v1/jobs/{id}",
        }
        v1_calls = [(k, "/api/v1/workflows") for k, _ in pairs]
        job_polls = [(k, f"/api/v1/jobs/{j}") for k, j in pairs]
        targets = {
            "fastapi": (ports["fastapi"], [("-", "/api/health")]),
            "asyncapp": (ports["asyncapp"], [("-", "/api/health")]),
            "connexion": (ports["connexion"], [("-", "/api/health")]),
            "flask": (ports["flask"], [("-", "/api/health")]),
            "naive": (ports["naive"], v1_calls),
            "health": (ports["app"], [("-", "/api/health")]),
            "v1": (ports["app"], v1_calls),
            "job": (ports["app"], job_polls),
            "edge_health": (ports["edge"], [("-", "/api/health")]),
            "edge_v1": (ports["edge"], v1_calls),
            "edge_job": (ports["edge"], job_polls),
            "once_health": (ports["once"], [("-", "/api/health")]),
            "once_v1": (ports["once"], v1_calls),
            "once_job": (ports["once"], job_polls),
        }
        if args.compare:
            names["before_health"] = f"{args.compare} GET /api/health"
            names["before_v1"] = f"{args.compare} GET /api/v1/workflows"
            targets["before_health"] = (ports["before"], targets["health"][1])
            targets["before_v1"] = (ports["before"], targets["v1"][1])
            names["before_job"] = f"{args.compare} GET /api/v1/jobs/{{id}}"
            targets["before_job"] = (ports["before"], targets["job"][1])
        if args.targets:
            chosen = args.targets.split(",")
            if unknown := set(chosen) - set(targets):
                sys.exit(f"unknown targets {sorted(unknown)}; known: {', '.join(targets)}")
            targets = {name: targets[name] for name in chosen}
            names = {name: names[name] for name in chosen}
        server_of = {name: next(s for s, p in ports.items() if p == port) for name, (port, _) in targets.items()}
        listings = {}
        for name, (_, lines) in targets.items():
            listings[name] = workdir / f"{name}.txt"
            listings[name].write_text("".join(f"{k} {p}\n" for k, p in lines))

        def url(name):
            return f"http://127.0.0.1:{targets[name][0]}"

        # Warm every worker, import and key cache once, outside the measurement.
        for name in targets:
            wrk(url(name), listings[name], 2, loads[0])
        results = {name: {c: [] for c in loads} for name in targets}
        order = list(targets)
        for round_ in range(args.rounds):
            # Alternate: each round starts from another target, so no target always follows the same one.
            shift = round_ % len(order)
            for c in loads:
                for name in order[shift:] + order[:shift]:
                    served = servers[server_of[name]]
                    results[name][c].append(served_wrk(served, url(name), listings[name], args.seconds, c))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for name, process in servers.items():
            if process.poll() is not None:
                sys.exit(f"{name} exited during the run:\n{(workdir / f'{name}.log').read_text()[-3000:]}")
    finally:
        for process in servers.values():
            stop(process)
        redis_server.close()
        postgres.close()
        if args.compare:
            subprocess.run(["git", "worktree", "remove", "--force", str(workdir / "before")], cwd=ROOT, check=False)
        if args.keep:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"\n{args.workers} server processes each; wrk -t2 -c{'/-c'.join(map(str, loads))}, {args.seconds} s a run, "
        f"median of {args.rounds} rounds, targets alternating; {os.cpu_count()} CPUs shared with wrk"
    )
    print(f"app: the Procfile's web line ({shlex.join(argvs['app'][1:])})")
    print(f"setup {setup_seconds:.0f} s, total {time.monotonic() - t0:.0f} s")
    verdicts = table(results, names, loads)
    return 1 if args.check and not all(verdicts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
