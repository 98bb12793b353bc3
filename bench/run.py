"""The app's own overhead, measured against its peers in one run, on this machine.

    make bench                      # or: .venv/bin/python bench/run.py [--rounds 3] [--seconds 5] [--keys 32]

Starts, side by side and each with 2 server processes:
  - plain Flask:     bench/peers/plain_flask.py, one view, gunicorn gthread workers;
  - bare Connexion:  bench/peers/bare_connexion/, a Connexion 3 FlaskApp with one operation from a
                     tiny spec, gunicorn + uvicorn workers (the app's worker class);
  - the app as shipped: the Procfile's web line (gunicorn, uvicorn workers, wsgi:app) against real
                     PostgreSQL and Redis (tests/servers.py), migrated by the Procfile's release line.
The peers are started from the same Procfile line, only the module (and for plain Flask the worker
class) replaced, so gunicorn's settings (access log included) are the same for all three.

Accounts, Enterprise keys and one job per key are made through the app's own HTTP interface (sign-up
and key creation on the portal, POST /api/v1/jobs), the tier set in the database as bench/soak.py
does: nothing here imports the app's packages.

wrk (-t2, on loopback) drives, at heavy (-c32) and light (-c4) load, alternating targets round by
round: plain Flask, bare Connexion, the app's GET /api/health, the authorised + limited + metered
GET /api/v1/workflows spread over --keys Enterprise keys, and GET /api/v1/jobs/{id}. A Lua script
counts every response outside 2xx. Each figure is the median of --rounds rounds; the ratios that
matter (app / bare Connexion, app / plain Flask, req/s) are printed with the goals of issue 16.
Absolute numbers on a shared machine are noise; the ratios, taken in the same run, are the figures.
wrk shares the machine's cores with the servers.
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
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "bench" / "peers"
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from tests import signup  # noqa: E402
from tests.servers import PostgresServer, RedisServer, free_port  # noqa: E402

LOADS = (32, 4)  # wrk connections: heavy, light
GOALS = {"health": 0.9, "v1": 0.7}  # × bare Connexion's req/s (issue 16), v1 with 0 non-2xx

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


def table(results: dict, names: dict) -> dict[str, bool]:
    def med(name, c, field):
        return statistics.median(r[field] for r in results[name][c])

    heads = " | ".join(f"{'c' + str(c) + ' req/s':>11} {'p50 ms':>7} {'p99 ms':>7}" for c in LOADS)
    print(f"\n{'target':40} {heads}  {'non-2xx':>7}  {'socket errors':>13}")
    for name, label in names.items():
        cells = " | ".join(
            f"{med(name, c, 'rps'):11.0f} {med(name, c, 'p50'):7.2f} {med(name, c, 'p99'):7.2f}" for c in LOADS
        )
        bad = sum(r["non2xx"] for c in LOADS for r in results[name][c])
        errors = sum(r["socket_errors"] for c in LOADS for r in results[name][c])
        print(f"{label:40} {cells}  {bad:7d}  {errors:13d}")
        statuses: dict[str, int] = {}
        for c in LOADS:
            for r in results[name][c]:
                for s, n in r["statuses"].items():
                    statuses[s] = statuses.get(s, 0) + n
        if statuses:
            print(f"{'':40}   non-2xx by status: {statuses}")

    print("\nreq/s each round (c32; c4):")
    for name, label in names.items():
        rounds = "; ".join(" ".join(f"{r['rps']:.0f}" for r in results[name][c]) for c in LOADS)
        print(f"  {label:38} {rounds}")

    print(f"\n{'ratio of req/s (median)':40} {'÷ bare Connexion':>18} {'÷ plain Flask':>15}   goal (c32)")
    print(f"{'':40} {'c32':>8} {'c4':>9} {'c32':>7} {'c4':>7}")
    verdicts = {}
    for name in ("connexion", "health", "v1", "job", "before_health", "before_v1"):
        if name not in results:
            continue
        cells = [med(name, c, "rps") / med(peer, c, "rps") for peer in ("connexion", "flask") for c in LOADS]
        text = "" if name == "connexion" else f"{cells[0]:8.2f} {cells[1]:9.2f}"
        text = f"{text:18} {cells[2]:7.2f} {cells[3]:7.2f}"
        goal = ""
        if name in GOALS:
            bad = sum(r["non2xx"] for c in LOADS for r in results[name][c])
            met = cells[0] >= GOALS[name] and (name != "v1" or bad == 0)
            verdicts[name] = met
            goal = f"≥ {GOALS[name]}× bare Connexion" + (" with 0 non-2xx" if name == "v1" else "")
            goal += f": {'met' if met else 'missed'}"
        print(f"{names[name]:40} {text}   {goal}")
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target and load (median taken)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--keys", type=int, default=32, help="Enterprise keys the v1 calls are spread over")
    parser.add_argument("--workers", type=int, default=2, help="server processes per server")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs (their path is printed)")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also serve the app as of git revision REV (a temporary worktree, same database and Redis) and "
        "measure its /api/health and v1 read in the same rounds: what the changes since REV bought",
    )
    args = parser.parse_args()
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

        ports = {name: free_port() for name in ("app", "connexion", "flask", "before")}
        argvs = {
            "app": web_argv(ports["app"], args.workers),
            "connexion": web_argv(ports["connexion"], args.workers, "server:app", PEERS / "bare_connexion"),
            "flask": web_argv(ports["flask"], args.workers, "plain_flask:app", PEERS, gthread=True),
        }
        if args.compare:
            before_tree = workdir / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), args.compare], cwd=ROOT, check=True)
            argvs["before"] = web_argv(ports["before"], args.workers, "wsgi:app", before_tree)
        for name, argv in argvs.items():
            servers[name] = start(argv, env if name in ("app", "before") else base_env, workdir / f"{name}.log")
        for name in argvs:
            wait_up(f"http://127.0.0.1:{ports[name]}/api/health", servers[name], workdir / f"{name}.log")
        app = f"http://127.0.0.1:{ports['app']}"
        pairs = prepare(app, database_url, args.keys)
        setup_seconds = time.monotonic() - t0

        names = {
            "flask": "plain Flask (gthread)",
            "connexion": "bare Connexion (uvicorn workers)",
            "health": "app GET /api/health",
            "v1": f"app GET /api/v1/workflows ({args.keys} keys)",
            "job": "app GET /api/v1/jobs/{id}",
        }
        targets = {
            "flask": (ports["flask"], [("-", "/api/health")]),
            "connexion": (ports["connexion"], [("-", "/api/health")]),
            "health": (ports["app"], [("-", "/api/health")]),
            "v1": (ports["app"], [(k, "/api/v1/workflows") for k, _ in pairs]),
            "job": (ports["app"], [(k, f"/api/v1/jobs/{j}") for k, j in pairs]),
        }
        if args.compare:
            names["before_health"] = f"{args.compare} GET /api/health"
            names["before_v1"] = f"{args.compare} GET /api/v1/workflows"
            targets["before_health"] = (ports["before"], targets["health"][1])
            targets["before_v1"] = (ports["before"], targets["v1"][1])
        listings = {}
        for name, (_, lines) in targets.items():
            listings[name] = workdir / f"{name}.txt"
            listings[name].write_text("".join(f"{k} {p}\n" for k, p in lines))

        def url(name):
            return f"http://127.0.0.1:{targets[name][0]}"

        # Warm every worker, import and key cache once, outside the measurement.
        for name in targets:
            wrk(url(name), listings[name], 2, LOADS[0])
        results = {name: {c: [] for c in LOADS} for name in targets}
        order = list(targets)
        for round_ in range(args.rounds):
            # Alternate: each round starts from another target, so no target always follows the same one.
            shift = round_ % len(order)
            for c in LOADS:
                for name in order[shift:] + order[:shift]:
                    results[name][c].append(wrk(url(name), listings[name], args.seconds, c))
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
        f"\n{args.workers} server processes each; wrk -t2 -c{'/-c'.join(map(str, LOADS))}, {args.seconds} s a run, "
        f"median of {args.rounds} rounds, targets alternating; {os.cpu_count()} CPUs shared with wrk"
    )
    print(f"app: the Procfile's web line ({shlex.join(argvs['app'][1:])})")
    print(f"setup {setup_seconds:.0f} s, total {time.monotonic() - t0:.0f} s")
    verdicts = table(results, names)
    return 1 if args.check and not all(verdicts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
