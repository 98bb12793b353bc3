"""Do open streams cost the API anything? The authorised v1 read with none, then with 50, open.

    .venv/bin/python bench/streams.py [--streams 50] [--rounds 3] [--seconds 5] [--keys 8]

The app as `make bench` serves it (the Procfile's web line on real PostgreSQL and Redis, bench/run.py's
helpers), --keys Enterprise accounts. wrk drives GET /api/v1/workflows over those keys at -c32,
alternating round by round between no stream open and --streams streams of `GET
/api/v1/request_log/stream` open beside the load, on accounts of their own (--same: on the load's
accounts, the worst case, where every call the load makes is streamed to several of them). The
streams are read in this process on one event loop, on the same cores. Ratios in the same run are
the figures; absolute numbers on a shared machine are noise.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: the app as make bench serves it)

from tests.servers import PostgresServer, RedisServer, free_port  # noqa: E402


class OpenStreams:
    """`count` request-log streams read on one event loop in a thread, until close()."""

    def __init__(self, base: str, keys: list[str], count: int):
        self.base, self.keys, self.count = base, keys, count
        self.ready = threading.Event()
        self.events = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self._stop: asyncio.Event | None = None
        self.thread.start()
        if not self.ready.wait(60):
            sys.exit("the streams did not open")

    async def _one(self, client: httpx.AsyncClient, key: str, opened: list):
        async with client.stream("GET", "/api/v1/request_log/stream", headers={"x-api-key": key}) as response:
            if response.status_code != 200:
                sys.exit(f"stream refused: {response.status_code} {(await response.aread())[:300]!r}")
            opened.append(1)
            if len(opened) == self.count:
                self.ready.set()
            async for line in response.aiter_lines():
                if line.startswith("event: request"):
                    self.events += 1

    async def _run(self):
        self._stop = asyncio.Event()
        opened: list = []
        limits = httpx.Limits(max_connections=self.count + 4)
        async with httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(10, read=None), limits=limits) as c:
            tasks = [
                asyncio.create_task(self._one(c, self.keys[i % len(self.keys)], opened)) for i in range(self.count)
            ]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self):
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--keys", type=int, default=8, help="Enterprise accounts (50 streams each at most)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--same", action="store_true", help="the streams on the load's accounts (worst case)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: make bench installs it")
    redis_server, postgres = RedisServer().start(), PostgresServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="lvq-bench-streams-"))
    app = None
    try:
        database_url = postgres.create_database("levqor_bench")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV", "VIRTUAL_ENV"))}
        env |= {
            "PATH": f"{bench.VENV_BIN}:{os.environ['PATH']}",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_server.url,
            "SECRET_KEY": "bench",
            "LEVQOR_VAR_DIR": str(workdir),
            "FLASK_APP": "wsgi:flask_app",
        }
        release = subprocess.run(
            ["bash", "-c", bench.procfile()["release"]], cwd=bench.ROOT, env=env, capture_output=True
        )
        if release.returncode != 0:
            sys.exit(f"release failed:\n{release.stderr[-2000:]!r}")
        port = free_port()
        app = bench.start(bench.web_argv(port, args.workers), env, workdir / "app.log")
        base = f"http://127.0.0.1:{port}"
        bench.wait_up(f"{base}/api/health", app, workdir / "app.log")
        made = [k for k, _ in bench.prepare(base, database_url, args.keys + (0 if args.same else 2))]
        keys, stream_keys = made[: args.keys], (made[: args.keys] if args.same else made[args.keys :])
        listing = workdir / "v1.txt"
        listing.write_text("".join(f"{k} /api/v1/workflows\n" for k in keys))
        bench.wrk(base, listing, 2, 32)  # warm up
        results: dict[str, list] = {"none": [], "open": []}
        streamed = 0
        for round_ in range(args.rounds):
            for state in ("none", "open") if round_ % 2 == 0 else ("open", "none"):
                streams = OpenStreams(base, stream_keys, args.streams) if state == "open" else None
                try:
                    results[state].append(bench.wrk(base, listing, args.seconds, 32))
                finally:
                    if streams is not None:
                        time.sleep(3)  # the last flush reaches the streams
                        streamed += streams.events
                        streams.close()
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        if app is not None:
            bench.stop(app)
        redis_server.close()
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)

    def med(state, field):
        return statistics.median(r[field] for r in results[state])

    print(f"\nGET /api/v1/workflows over {args.keys} Enterprise keys, wrk -t2 -c32, {args.seconds} s a run, median of")
    print(f"{args.rounds} rounds alternating; {args.workers} server processes; {os.cpu_count()} CPUs shared with wrk")
    print(f"{'':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    where = "on the load's accounts" if args.same else "on 2 other accounts"
    for state, label in (("none", "no stream open"), ("open", f"{args.streams} streams open")):
        non2xx = sum(r["non2xx"] for r in results[state])
        print(f"{label:<28}{med(state, 'rps'):>10.0f}{med(state, 'p50'):>9.1f}{med(state, 'p99'):>9.1f}{non2xx:>9}")
    ratio = med("open", "rps") / med("none", "rps")
    print(f"with streams ({where}) / without: {ratio:.2f}; {streamed} call events streamed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
