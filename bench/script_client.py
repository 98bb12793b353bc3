"""CPU per gate.lua-shaped script call: the gate's script client against redis-py's asyncio client.

    .venv/bin/python bench/script_client.py [--calls 2000] [--rounds 15] [--cluster]

Starts a real Redis and awaits one EVALSHA at a time (as a request does) through each client on the
same event loop, alternating rounds; prints the median process CPU per call of each. redis-py's
client parses with hiredis when it is installed, as it is here (requirements.txt). The in-app
figure, the same swap inside the authorised v1 read, is `make bench-cpu`'s last line;
docs/decisions/0012-redis-script-client.md says what each means for keeping the client.

--cluster: on a local Redis Cluster (3 primaries, 3 replicas), the gate's cluster script client
(levqor_core.redis_scripts.ClusterScriptClient, what LIMITS_REDIS_URL on a cluster uses) against
redis-py's asyncio cluster client, both with their slot maps.
"""

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio  # noqa: E402
import redis.asyncio.cluster  # noqa: E402

from levqor_core import redis_scripts  # noqa: E402
from tests.servers import RedisClusterServer, RedisServer  # noqa: E402

# A reply shaped like gate.lua's admission: eleven fields, strings and integers.
SCRIPT = "return {'ok', 1000, 958, ARGV[1], 250, 249, 42, 'key_0123456789abcdef', 'e1', 17, ''}"


async def cpu_per_call(script, calls: int) -> float:
    started = time.process_time()
    for i in range(calls):
        await script(keys=["lvq:bench"], args=[i])
    return (time.process_time() - started) / calls * 1e6


async def measure(url: str, calls: int, rounds: int, cluster_url: str | None = None) -> tuple[float, float]:
    ours = redis_scripts.ScriptClient(url).register_script(SCRIPT)
    if cluster_url:
        ours = redis_scripts.ClusterScriptClient(cluster_url).register_script(SCRIPT)
        cluster = redis.asyncio.cluster.RedisCluster.from_url(cluster_url, socket_timeout=0.5)
        await cluster.initialize()
        theirs = cluster.register_script(SCRIPT)
    else:
        theirs = redis.asyncio.from_url(url, socket_timeout=0.5).register_script(SCRIPT)
    for script in (ours, theirs):  # warm: connections, EVALSHA cached
        await cpu_per_call(script, 500)
    samples: tuple[list, list] = ([], [])
    for _ in range(rounds):
        samples[0].append(await cpu_per_call(ours, calls))
        samples[1].append(await cpu_per_call(theirs, calls))
    return statistics.median(samples[0]), statistics.median(samples[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds (median taken)")
    parser.add_argument("--cluster", action="store_true", help="against redis-py's asyncio cluster client")
    args = parser.parse_args()
    if args.cluster:
        server = RedisClusterServer().start()
        url = f"redis://127.0.0.1:{server.primary_of('lvq:bench')}/0"  # the key's own primary
        cluster_url = server.url
    else:
        server = RedisServer().start()
        url, cluster_url = server.url, None
    try:
        ours, theirs = asyncio.run(measure(url, args.calls, args.rounds, cluster_url))
    finally:
        server.close()
    name = "redis-py asyncio cluster" if args.cluster else "redis-py asyncio (hiredis)"
    print(
        f"script client {ours:.0f} µs per call   {name} {theirs:.0f} µs per call   "
        f"saved {theirs - ours:.0f} µs (process CPU, median of {args.rounds} rounds of {args.calls})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
