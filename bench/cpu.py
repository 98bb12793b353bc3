"""CPU time per request, in process: the app's own overhead where wrk's req/s is drowned in noise.

    .venv/bin/python bench/cpu.py [--requests 300] [--rounds 15] [--compare REV]

Drives three ASGI apps directly, with no socket and no HTTP parser (what those cost is the same for
every app): the bare Connexion peer (bench/peers/bare_connexion) and this app's GET /api/health and
authorised + limited + metered GET /api/v1/workflows (40 Enterprise keys, against real PostgreSQL
and Redis started here). Rounds alternate the targets; each figure is the median over rounds of the
process CPU time per request (Flask's worker threads included), so a busy machine slows every
target alike. The v1 read runs twice: with the gate's own script client (levqor_core.redis_scripts)
and with redis-py's asyncio client (hiredis-parsed) in its place, so the client's saving is
measured in the same rounds (docs/decisions/0012-redis-script-client.md keeps the client only
while it saves >= 10 % of the v1 read). Prints µs per request and the ratios bare / app (1.0: the app costs no more than
bare Connexion). --compare REV runs the same measurement on the app as of git revision REV (a
temporary worktree) in a second process, for a before/after.
"""

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = Path(__file__).resolve().parent.parent


def scope(path: str, headers=()) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
    }


async def call(asgi, request: dict, body: bytes = b"") -> int:
    status = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await asgi(dict(request), receive, send)
    return status[0]


async def cpu_per_request(asgi, requests: list[dict], n: int) -> float:
    """µs of process CPU per request over n requests (cycling through `requests`); all must be 200."""
    started = time.process_time()
    for i in range(n):
        status = await call(asgi, requests[i % len(requests)])
        if status != 200:
            sys.exit(f"{requests[i % len(requests)]['path']} answered {status}")
    return (time.process_time() - started) / n * 1e6


def _peer(name: str, path: Path):
    """A peer's module, loaded from its file (two peers are both called `server`)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def profile(asgi, requests: list[dict], n: int, top: int = 30) -> str:
    """cProfile's view of n requests (after a warm-up): the functions by own time and by cumulative time."""

    async def drive():
        await cpu_per_request(asgi, requests, 100)
        profiler = cProfile.Profile(time.thread_time)  # CPU of the loop's thread, not waits
        profiler.enable()
        await cpu_per_request(asgi, requests, n)
        profiler.disable()
        return profiler

    profiler = asyncio.run(drive())
    if dump := os.environ.get("BENCH_PROFILE_OUT"):  # raw stats, for pstats / snakeviz
        profiler.dump_stats(dump)
    out = io.StringIO()
    for order in ("tottime", "cumulative"):
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(top)
    return out.getvalue()


def measure(app_root: Path, n: int, rounds: int, peers: bool = False, profile_target: str | None = None) -> dict:
    """Run in the process that imports the app from `app_root`: {target: median µs per request}.
    With `peers`, also plain FastAPI, bare AsyncApp and the AsyncApp prototype with the app's edge
    (bench/peers/asyncapp_edge.py) on this app's Flask app; with `profile_target`, print that
    target's cProfile instead of measuring."""
    sys.path[:0] = [str(app_root), str(HERE / "peers" / "bare_connexion"), str(ROOT)]
    os.environ.setdefault("VALIDATE_RESPONSES", "0")  # as served (README "Speed")
    import server as bare  # the peer
    from flask_migrate import upgrade

    from levqor_core.accounts.models import Account
    from levqor_core.app import create_app
    from levqor_core.extensions import db
    from levqor_core.keys import service as keys
    from tests.servers import PostgresServer, RedisServer

    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    try:
        url = postgres.create_database("levqor_cpu")
        cx = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url.replace("postgresql://", "postgresql+psycopg://"),
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "SECRET_KEY": "bench",
            }
        )
        with cx.app.app_context():
            upgrade()
            keyring = []
            for _ in range(40):  # Enterprise's 250 calls/s burst per key stays out of the way
                account = Account(email=f"cpu-{uuid.uuid4().hex[:8]}@example.com", password_hash="x", tier="enterprise")
                db.session.add(account)
                db.session.commit()
                keyring.append(keys.issue(account, keys.Actor(email="bench")).raw)
        v1_requests = [scope("/api/v1/workflows", [(b"x-api-key", k.encode())]) for k in keyring]
        targets = {
            "bare": (bare.app, [scope("/api/health")]),
            "health": (cx, [scope("/api/health")]),
            "v1": (cx, v1_requests),
        }
        if peers or profile_target:
            sys.path.insert(0, str(HERE / "peers"))
            import asyncapp_edge
            import fastapi_plain

            edge = asyncapp_edge.build(cx.app)
            targets["fastapi"] = (fastapi_plain.app, [scope("/api/health")])
            targets["asyncapp"] = (
                _peer("bare_asyncapp", HERE / "peers" / "bare_asyncapp" / "server.py").app,
                [scope("/api/health")],
            )
            targets["edge-health"] = (edge, [scope("/api/health")])
            targets["edge-v1"] = (edge, v1_requests)
            built_once = asyncapp_edge.build(cx.app, built_once=True)
            targets["edge-built-once-health"] = (built_once, [scope("/api/health")])
            targets["edge-built-once-v1"] = (built_once, v1_requests)
        else:
            redis_py_gate = _with_redis_py_gate(create_app, cx, redis_server.url)
            if redis_py_gate is not None:  # an older revision (--compare) may predate the factory
                targets["v1-redis-py"] = (redis_py_gate, v1_requests)
        if profile_target:
            print(profile(*targets[profile_target], n))  # above the JSON line
            return {}

        async def run() -> dict:
            for asgi, requests in targets.values():  # warm: imports, caches, key records
                await cpu_per_request(asgi, requests, 100)
            samples = {name: [] for name in targets}
            for _ in range(rounds):
                for name, (asgi, requests) in targets.items():
                    samples[name].append(await cpu_per_request(asgi, requests, n))
            return {name: statistics.median(values) for name, values in samples.items()}

        return asyncio.run(run())
    finally:
        redis_server.close()
        postgres.close()


def _with_redis_py_gate(create_app, cx, redis_url: str):
    """The same app again, its gate calling gate.lua through redis-py's asyncio client (which parses
    with hiredis when installed, as it is here) instead of the script client; None if this revision's
    gate cannot take another client."""
    import redis.asyncio

    twin = create_app(dict(cx.app.config))
    gate = twin.app.extensions["levqor.gate"]
    if not hasattr(gate, "_async_client_factory"):
        return None
    gate._async_client_factory = lambda: redis.asyncio.from_url(redis_url, socket_timeout=0.5)
    return twin


PEER_LABELS = {
    "fastapi": "plain FastAPI",
    "asyncapp": "bare AsyncApp",
    "bare": "bare FlaskApp",
    "health": "app health",
    "v1": "app v1 read",
    "edge-health": "AsyncApp + edge health",
    "edge-v1": "AsyncApp + edge v1 read",
    "edge-built-once-health": "… built once: health",
    "edge-built-once-v1": "… built once: v1 read",
}


def report_peers(figures: dict) -> None:
    """µs per request, and the req/s a CPU-bound server would reach relative to plain FastAPI and bare FlaskApp."""
    print(f"{'target':26} {'µs/request':>10} {'× plain FastAPI':>16} {'× bare FlaskApp':>16}")
    for name, label in PEER_LABELS.items():
        us = figures[name]
        print(f"{label:26} {us:10.0f} {figures['fastapi'] / us:16.2f} {figures['bare'] / us:16.2f}")
    print("(× peer: the peer's CPU per request ÷ the target's, i.e. req/s relative to it when CPU-bound)")


def report(label: str, figures: dict) -> None:
    print(
        f"{label:28} bare Connexion {figures['bare']:6.0f} µs   health {figures['health']:6.0f} µs   "
        f"v1 read {figures['v1']:6.0f} µs   bare/health {figures['bare'] / figures['health']:.2f}   "
        f"bare/v1 {figures['bare'] / figures['v1']:.2f}"
    )
    if "v1-redis-py" in figures:
        saved = figures["v1-redis-py"] - figures["v1"]
        print(
            f"{'':28} v1 read with redis-py's asyncio client in the gate {figures['v1-redis-py']:6.0f} µs: "
            f"the script client saves {saved:.0f} µs, {saved / figures['v1-redis-py']:.0%} of it"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="requests per target per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (median taken)")
    parser.add_argument("--compare", metavar="REV", help="also measure the app as of git revision REV")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also plain FastAPI, bare AsyncApp and the AsyncApp prototype with the app's edge (health, v1 read)",
    )
    parser.add_argument(
        "--profile",
        choices=tuple(PEER_LABELS),
        help="print cProfile's view (CPU of the event loop's thread) of --requests requests of this target "
        "instead; BENCH_PROFILE_OUT=file also keeps the raw stats",
    )
    parser.add_argument("--app-root", type=Path, help=argparse.SUPPRESS)  # the measuring child
    args = parser.parse_args()
    if args.app_root:
        print(json.dumps(measure(args.app_root, args.requests, args.rounds, args.peers, args.profile)))
        return 0
    runs = [("this tree", ROOT)]
    with tempfile.TemporaryDirectory(prefix="lvq-cpu-") as tmp:
        if args.compare:
            before = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "--detach", str(before), args.compare], cwd=ROOT, check=True)
            runs.append((args.compare, before))
        try:
            for label, root in runs:
                child = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--app-root",
                        str(root),
                        "--requests",
                        str(args.requests),
                        "--rounds",
                        str(args.rounds),
                        *(["--peers"] if args.peers else []),
                        *(["--profile", args.profile] if args.profile else []),
                    ],
                    cwd=root,
                    capture_output=True,
                    text=True,
                )
                if child.returncode != 0:
                    sys.exit(f"{label}: {child.stderr[-3000:]}")
                lines = child.stdout.strip().splitlines()
                figures = json.loads(lines[-1])
                if args.profile:
                    print("\n".join(lines[:-1]))
                elif args.peers:
                    report_peers(figures)
                else:
                    report(label, figures)
        finally:
            if args.compare:
                subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    print(f"(process CPU per request, median of {args.rounds} rounds of {args.requests}; no socket, no HTTP parser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
