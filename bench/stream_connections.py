"""How many Redis connections do open streams hold? One web process with none, then --streams open.

    .venv/bin/python bench/stream_connections.py [--streams 50] [--accounts 5] [--cluster]

The app (create_app, served by uvicorn in a thread of this process, as tests/servers.py serves it)
on real PostgreSQL and Redis; with --cluster its LIMITS_REDIS_URL names a node of a local Redis
Cluster (3 primaries, 3 replicas). --streams request-log and events streams over --accounts
Enterprise accounts are opened on one event loop; the limits Redis's connections (every primary's,
on a cluster) are counted with CLIENT LIST after one stream (the streams' clients made) and with all
of them open, and the connections reading (last command XREAD) are shown. One event is then sent
to every account and each stream must get its own account's.
"""

import argparse
import asyncio
import collections
import contextlib
import json
import os
import sys
import threading
import uuid
from pathlib import Path

import httpx
import redis
import redis.cluster

ROOT = Path(os.environ.get("LEVQOR_ROOT", Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from tests.servers import PostgresServer, RedisClusterServer, RedisServer, served_in_thread  # noqa: E402


def limits_clients(r) -> list[dict]:
    if isinstance(r, redis.cluster.RedisCluster):
        return [c for node in r.get_primaries() for c in r.client_list(target_nodes=node)]
    return r.client_list()


class OpenStreams:
    """Streams read on one event loop in a thread; `events` counts the webhooks each one got."""

    def __init__(self, base: str, routes_and_keys: list[tuple[str, str]]):
        self.base, self.routes_and_keys = base, routes_and_keys
        self.opened = 0
        self.got: dict[int, list] = {n: [] for n in range(len(routes_and_keys))}
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)
        self.thread.start()
        if not self.ready.wait(60):
            sys.exit("the streams did not open")

    async def _one(self, client, n: int, route: str, key: str):
        async with client.stream("GET", route, headers={"x-api-key": key}) as response:
            if response.status_code != 200:
                sys.exit(f"stream refused: {response.status_code} {(await response.aread())[:300]!r}")
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "ready":
                    self.opened += 1
                    if self.opened == len(self.routes_and_keys):
                        self.ready.set()
                elif line.startswith("data: ") and event == "webhook":
                    self.got[n].append(json.loads(json.loads(line[6:])["body"])["data"]["id"])

    async def _run(self):
        self.stop = asyncio.Event()
        limits = httpx.Limits(max_connections=len(self.routes_and_keys) + 4)
        async with httpx.AsyncClient(base_url=self.base, timeout=httpx.Timeout(10, read=None), limits=limits) as c:
            tasks = [asyncio.create_task(self._one(c, n, *rk)) for n, rk in enumerate(self.routes_and_keys)]
            await self.stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--cluster", action="store_true", help="LIMITS_REDIS_URL on a local Redis Cluster")
    args = parser.parse_args()

    from flask_migrate import upgrade

    from levqor_core.accounts.models import Account
    from levqor_core.app import create_app
    from levqor_core.extensions import db
    from levqor_core.keys import service as keys

    queues, postgres = RedisServer().start(), PostgresServer().start()
    cluster = RedisClusterServer().start() if args.cluster else None
    try:
        config = {
            "SQLALCHEMY_DATABASE_URI": postgres.create_database("levqor_bench").replace(
                "postgresql://", "postgresql+psycopg://"
            ),
            "REDIS_URL": queues.url,
            "SECRET_KEY": "bench",
        } | ({"LIMITS_REDIS_URL": cluster.url} if cluster else {})
        cx = create_app(config)
        app = cx.app
        with app.app_context():
            upgrade()
            made = []
            for _ in range(args.accounts):
                email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
                account = Account(email=email, password_hash="x", tier="enterprise")
                db.session.add(account)
                db.session.commit()
                made.append(keys.issue(account, keys.Actor(email="bench")).raw)
        limits = app.extensions["levqor.limits_redis"]
        with served_in_thread(cx) as port:
            base = f"http://127.0.0.1:{port}"
            routes = ["/api/sandbox/v1/events/stream", "/api/v1/request_log/stream"]
            first = OpenStreams(base, [(routes[0], made[0])])
            with_one = limits_clients(limits)
            streams = OpenStreams(base, [(routes[0], made[n % len(made)]) for n in range(args.streams - 1)])
            with_all = limits_clients(limits)
            sent = []
            for key in made:
                trigger = f"{base}/api/sandbox/v1/events/trigger"
                answer = httpx.post(trigger, json={"type": "job.failed"}, headers={"x-api-key": key})
                sent.append(answer.json()["data"]["id"])
            for _ in range(100):
                if all(streams.got.values()):
                    break
                threading.Event().wait(0.1)
            wrong = [n for n, got in streams.got.items() if got != [sent[n % len(made)]]]
            streams.close()
            first.close()
    finally:
        for server in (cluster, queues, postgres):
            if server is not None:
                with contextlib.suppress(Exception):
                    server.close()

    reading = [c for c in with_all if c["cmd"] in ("xread", "client|id")]
    where = "a Redis Cluster (3 primaries)" if args.cluster else "one Redis"
    print(f"\nLimits Redis on {where}; {args.streams} streams over {args.accounts} accounts, one process")
    print(f"connections with 1 stream open:  {len(with_one)}")
    print(f"connections with {args.streams} streams open: {len(with_all)}")
    print(f"  of which reading streams (XREAD): {len(reading)}")
    print("  last commands:", dict(collections.Counter(c["cmd"] for c in with_all)))
    print(f"streams that missed or mixed up their account's event: {len(wrong)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
