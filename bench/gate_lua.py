"""Redis's CPU per gate.lua call, and the memory of a key's day base, this tree against a revision.

    .venv/bin/python bench/gate_lua.py [--compare REV] [--keys 200] [--calls 3000] [--rounds 15]

Runs this tree's gate.lua (and REV's, default HEAD~1, on the same server in alternate rounds) for
metered v1 calls of `--keys` keys, with the keys and arguments the gate sends (gate.script_keys,
gate.script_args). Each round resets Redis's command statistics and reads back EVALSHA's
`usec_per_call` (Redis's own time per script run, not the client's); the best round is the figure
on a shared machine (a busy one only adds to it), the median is printed too. Also prints the memory
of one key's day base after 100 calls (MEMORY USAGE) and the gate's Python cost of a call id.
"""

import argparse
import statistics
import subprocess
import sys
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from levqor_core.limits import gate  # noqa: E402
from levqor_core.limits.key_cache import record_key  # noqa: E402
from tests.servers import RedisServer  # noqa: E402


def _seed(r: redis.Redis, keys: int) -> list[tuple]:
    """Cached key records for `keys` unlimited keys: (owner, key hash) each."""
    owners = []
    for i in range(keys):
        owner, key_hash = (10_000 + i, f"key{i}"), f"hash{i:040d}"
        r.hset(
            record_key(owner[0], key_hash),
            mapping={"acct": owner[0], "kid": owner[1], "quota": -1, "burst": 10**9, "pid": "", "pend": "", "exp": ""},
        )
        owners.append((owner, key_hash))
    return owners


def _round(r: redis.Redis, sha: str, owners: list[tuple], calls: int) -> float:
    """EVALSHA's usec_per_call over `calls` metered calls."""
    r.config_resetstat()
    now = time.time()
    period = gate._calendar_args(int(now))[0]
    pipe = r.pipeline(transaction=False)
    for i in range(calls):
        owner, key_hash = owners[i % len(owners)]
        keys = gate.script_keys(owner, key_hash, now, period)
        args = gate.script_args("v1", now, period, gate.call_ids.next())
        pipe.evalsha(sha, len(keys), *keys, *args)
        if len(pipe) == 200:
            assert all(reply[0] == b"ok" for reply in pipe.execute())
    assert all(reply[0] == b"ok" for reply in pipe.execute())
    return float(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def _base_bytes(r: redis.Redis, sha: str) -> int:
    """A key's day base after 100 metered calls."""
    owner, key_hash = (99_999, "sized"), "hash-sized"
    r.hset(
        record_key(owner[0], key_hash),
        mapping={"acct": owner[0], "kid": owner[1], "quota": -1, "burst": 10**9, "pid": "", "pend": "", "exp": ""},
    )
    now = time.time()
    period = gate._calendar_args(int(now))[0]
    keys = gate.script_keys(owner, key_hash, now, period)
    r.delete(*keys[1:])
    for _ in range(100):
        r.evalsha(sha, len(keys), *keys, *gate.script_args("v1", now, period, gate.call_ids.next()))
    return r.memory_usage(keys[5])  # KEYS[6], the day base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", default="HEAD~1", metavar="REV", help="the revision whose gate.lua to compare")
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--calls", type=int, default=3_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    scripts = {
        "this tree": gate._SCRIPT,
        args.compare: subprocess.run(
            ["git", "show", f"{args.compare}:levqor_core/limits/gate.lua"], cwd=ROOT, check=True, capture_output=True
        ).stdout.decode(),
    }
    server = RedisServer().start()
    try:
        r = redis.Redis.from_url(server.url)
        owners = _seed(r, args.keys)
        shas = {label: r.script_load(script) for label, script in scripts.items()}
        samples: dict[str, list[float]] = {label: [] for label in scripts}
        for sha in shas.values():  # warm: the day bases and counters exist
            _round(r, sha, owners, args.keys * 2)
        for i in range(args.rounds):  # alternate rounds, the order reversed every other one
            for label, sha in list(shas.items())[:: 1 if i % 2 else -1]:
                samples[label].append(_round(r, sha, owners, args.calls))
        sizes = {label: _base_bytes(r, sha) for label, sha in shas.items()}
    finally:
        server.close()
    for label in scripts:
        print(
            f"{label:12} gate.lua: Redis CPU per metered call {min(samples[label]):6.2f} µs at best, "
            f"{statistics.median(samples[label]):6.2f} µs median ({args.rounds} rounds of {args.calls}); "
            f"a key's day base after 100 calls {sizes[label]} B"
        )
    per_id = min(timeit.repeat(gate.call_ids.next, number=100_000, repeat=5)) / 100_000 * 1e6
    print(f"a call id in the gate's process: {per_id:.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
