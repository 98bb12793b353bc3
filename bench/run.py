"""Load benchmark of the API as deployed: gunicorn (2 uvicorn workers), real PostgreSQL and Redis.

    make bench                      # or: .venv/bin/python bench/run.py [--seconds 10] [--keys 32]

Prints requests/s and p50/p99 latency for (a) GET /api/health (no auth), (b) an authorised
GET /api/v1/workflows spread over several Enterprise keys (key check + burst limit + quota +
metering), (c) an authorised GET /api/v1/jobs/{id}, and the ratios (b)/(a) and (c)/(a).
Load comes from wrk (Debian package) on loopback; every run is bounded by --seconds.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import PostgresServer, RedisServer, free_port  # noqa: E402

LUA = textwrap.dedent(
    """
    local targets = {}
    for line in io.lines("%s") do
      local key, path = line:match("([^ ]+) ([^ ]+)")
      targets[#targets + 1] = {key, path}
    end
    local n = 0
    request = function()
      n = n + 1
      local t = targets[(n %% #targets) + 1]
      if t[1] == "-" then return wrk.format("GET", t[2]) end
      return wrk.format("GET", t[2], {["x-api-key"] = t[1]})
    end
    """
)


def prepare(env: dict, keys: int) -> list[tuple[str, str]]:
    """Create Enterprise accounts, their keys and one job each; return (raw key, job id) pairs."""
    script = textwrap.dedent(
        f"""
        import json
        from levqor import create_app, keys, jobs
        from levqor.extensions import db
        from levqor.models import Account
        from flask_migrate import upgrade
        app = create_app({{"RQ_ASYNC": True}})
        out = []
        with app.app.app_context():
            upgrade()
            for i in range({keys}):
                account = Account(email=f"bench{{i}}@example.com", password_hash="x", tier="enterprise")
                db.session.add(account)
                db.session.commit()
                raw = keys.issue(account, keys.Actor(email="bench")).raw
                job, _ = jobs.create(account.id, "echo", {{"i": i}})
                out.append((raw, job.id))
        print(json.dumps(out))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return [tuple(pair) for pair in json.loads(done.stdout.strip().splitlines()[-1])]


def wrk(url: str, targets: list[tuple[str, str]], seconds: int, connections: int, workdir: Path) -> dict:
    listing = workdir / "targets.txt"
    listing.write_text("".join(f"{k} {p}\n" for k, p in targets))
    script = workdir / "targets.lua"
    script.write_text(LUA % listing)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout

    def latency_ms(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency_ms("50"),
        "p99": latency_ms("99"),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keys", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install wrk (make bench does it)")

    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="lvq-bench-"))
    server = None
    try:
        database_url = postgres.create_database("levqor_bench")
        env = os.environ | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "bench",
            "LOG_LEVEL": "WARNING",
            "LEVQOR_VAR_DIR": str(workdir),
        }
        pairs = prepare(env, args.keys)
        port = free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "-k",
                "uvicorn_worker.UvicornWorker",
                "-w",
                str(args.workers),
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(base + "/api/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        # Warm every worker and key cache once, outside the measurement.
        warm = [("-", "/api/health")] + [(k, "/api/v1/workflows") for k, _ in pairs]
        wrk(base, warm, 2, args.connections, workdir)
        scenarios = {
            "(a) GET /api/health": [("-", "/api/health")],
            "(b) GET /api/v1/workflows": [(k, "/api/v1/workflows") for k, _ in pairs],
            "(c) GET /api/v1/jobs/{id}": [(k, f"/api/v1/jobs/{j}") for k, j in pairs],
        }
        results = {
            name: wrk(base, targets, args.seconds, args.connections, workdir) for name, targets in scenarios.items()
        }
    finally:
        if server:
            server.terminate()
            server.wait(timeout=20)
        redis_server.close()
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.workers} gunicorn workers, wrk -t2 -c{args.connections} -d{args.seconds}s, {args.keys} keys\n")
    print(f"{'scenario':30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:30} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['requests']:9d} {r['non_2xx']:8d}")
    a, b, c = (r["rps"] for r in results.values())
    print(f"\nratio (b)/(a) = {b / a:.2f}    ratio (c)/(a) = {c / a:.2f}")
    errors = {n: r["socket_errors"] for n, r in results.items() if r["socket_errors"] != "none"}
    if errors:
        print(f"socket errors: {errors}")


if __name__ == "__main__":
    main()
