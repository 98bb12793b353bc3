"""The job poll's answer held in Redis, read in the gate's own round trip (issue 28).

`GET /api/v1/jobs/{job_id}` is the API's most frequent call. Its answer is held in the limits
Redis beside the account's gate keys (one slot: `metering.tag`), and gate.lua reads it after
admitting the call, so a warm poll costs what any v1 call costs: one Redis round trip, no SQL.

What a poll promises does not change: **never a status older than the last one committed before
the poll began** (tests/test_job_poll.py watches the row while the real worker runs a job). Three
keys per job make that hold whatever order things happen in:

- the answer (`body`, and the `epoch` of the server it was held on), for ANSWER_SECONDS;
- the job's writes in flight: every write of a job's row counts it up and drops the answer before
  its statement, and counts it down after its commit (`Writes`). While it is above 0 nothing is
  held: each poll reads the database, which is never older than its commit;
- the job's generation: counted up by both halves of each write. The gate hands a poll that
  found no answer the generation it saw; the poll holds what it read only if the generation is
  still that and no write is in flight (`fill`), so a read from before a write is never held
  after it.

A server's epoch (its replication id and the bucket's life, as gate.lua computes it) changes with
a failover or a restart empty: an answer held on a server whose writes a failover may have lost
is not used. If Redis is away when a write counts up, that write cannot drop the answer: a poll may
then show the status before it for up to ANSWER_SECONDS (the log says so). A write that counted up
but never down (its process died) sends polls to the database until its seconds pass (the
worker's, around a whole job: API_JOB_TIMEOUT and a margin).
"""

import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from levqor_core import redis_conn
from levqor_core.metering import counters as metering

log = logging.getLogger(__name__)

ANSWER_SECONDS = 60
# A finished job's answer carries its result (up to jobs.MAX_RESULT_BYTES, 256 KiB): held whatever
# their size, 10,000 jobs polled in one minute could hold 2.5 GB of Redis. Larger answers are read
# from the database at every poll.
MAX_HELD_BYTES = 16 * 1024
WRITING_SECONDS = 60  # longer than any one statement of a job's write and its commit (the default)
GENERATION_SECONDS = 120  # outlives any poll between its gate call and its fill
# Only an id of the form we issue names a key: anything else is read (and refused) by the database.
_JOB_ID = re.compile(r"job_[0-9a-f]{20}")

# What gate.lua hands a poll besides its verdict (its reply's 12th element): the held answer, or
# b"g<generation>": nothing held; hold what you read if the generation is still this.
FILL = b"g"

# The writes in flight expire with the longest of them (a cancel's 60 s must not cut the worker's
# hold around a run short).
_WRITING = """
redis.call('INCR', KEYS[2])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
"""
# ARGV[3]: 1 when this write's first half counted up (else there is nothing of its own to count down).
_WRITTEN = """
if ARGV[3] == '1' and redis.call('DECR', KEYS[2]) <= 0 then redis.call('DEL', KEYS[2]) end
redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
"""
# KEYS: the answer, the writes in flight, the generation, the bucket's life (gate.lua's KEYS[8]).
# ARGV: the generation and the epoch the gate saw, the body, its seconds.
_FILL = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[1] then return 0 end
local life = redis.call('GET', KEYS[4])
if not life then return 0 end
local epoch = string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') .. ':' .. life
if epoch ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[3], 'epoch', epoch)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


def is_cacheable(job_id: str) -> bool:
    return _JOB_ID.fullmatch(job_id) is not None


def keys(account_id: int, job_id: str) -> list[str]:
    """The answer, its writes in flight, its generation, in the account's slot, and named by the
    account as well as the job: a slot holds many accounts, and a poll by another account of this
    job's id must find nothing held."""
    prefix = f"lvq:{metering.tag(account_id)}"
    return [
        f"{prefix}:jp:{account_id}:{job_id}",
        f"{prefix}:jw:{account_id}:{job_id}",
        f"{prefix}:jg:{account_id}:{job_id}",
    ]


def gate_keys(account_id: int, job_id: str) -> list[str]:
    """gate.lua's KEYS[9] and KEYS[10]: the answer and the generation."""
    answer, _writing, generation = keys(account_id, job_id)
    return [answer, generation]


def body(job: dict) -> bytes:
    """The poll's response body, the same bytes whether read from the database or from Redis: as the
    app's Jsonifier writes every answer (compact, and a newline)."""
    return json.dumps(job, separators=(",", ":")).encode() + b"\n"


def is_answer(offer: bytes | None) -> bool:
    """Whether the gate's offer is a held answer (a JSON object) rather than a way to hold one."""
    return offer is not None and offer[:1] == b"{"


def fill(r: redis.Redis, account_id: int, job_id: str, seen: tuple[bytes, bytes], answer: bytes) -> bool:
    """Hold a poll's answer read from the database, unless a write began since its gate call:
    `seen` is (gate.lua's reply to it, the server's epoch). Redis away, or an answer over
    MAX_HELD_BYTES: nothing is held."""
    offer, epoch = seen
    if len(answer) > MAX_HELD_BYTES:
        return False
    try:
        return bool(
            r.register_script(_FILL)(
                keys=[*keys(account_id, job_id), metering.epoch_key(account_id)],
                args=[offer[len(FILL) :], epoch, answer, ANSWER_SECONDS],
            )
        )
    except redis_conn.UNAVAILABLE as err:
        log.warning("job poll: answer of %s not held: %s", job_id, err)
        return False


class Writes:
    """The two halves around the writes of some jobs' rows (account id, job id): `with
    Writes(r, jobs):` around the statements and their commits, which must end within `seconds`
    (else the writes in flight are forgotten). Redis away: logged, never raised (the database's
    write goes on; see the module's last paragraph)."""

    def __init__(self, r: redis.Redis, jobs: Iterable[tuple[int, str]], seconds: int = WRITING_SECONDS):
        self.r = r
        self.jobs = list(jobs)
        self.seconds = seconds
        self.counted: list[tuple[int, str]] = []

    def __enter__(self) -> "Writes":
        for account_id, job_id in self.jobs:
            if self._run(_WRITING, account_id, job_id, counted=False):
                self.counted.append((account_id, job_id))
        return self

    def __exit__(self, *exc) -> None:
        counted = set(self.counted)
        for account_id, job_id in self.jobs:
            self._run(_WRITTEN, account_id, job_id, counted=(account_id, job_id) in counted)

    def _run(self, script: str, account_id: int, job_id: str, *, counted: bool) -> bool:
        try:
            self.r.register_script(script)(
                keys=keys(account_id, job_id), args=[self.seconds, GENERATION_SECONDS, int(counted)]
            )
            return True
        except redis_conn.UNAVAILABLE as err:
            log.warning("job poll: write of %s not told to Redis (a poll may show its old status): %s", job_id, err)
            return False


@contextmanager
def writes(jobs: Iterable[tuple[int, str]], seconds: int = WRITING_SECONDS) -> Iterator[Writes]:
    """`Writes` on the app's limits Redis."""
    with Writes(redis_conn.for_limits(), jobs, seconds) as told:
        yield told


def forget(jobs: Iterable[tuple[int, str]]) -> None:
    """Drop the answers of jobs just deleted (the purge), and refuse any fill that read them
    before: a deletion has no in-between state a poll must not see, so one half is enough."""
    jobs = list(jobs)
    if not jobs:
        return
    try:
        # One key per command: a cluster's pipeline splits it by node.
        pipe = redis_conn.for_limits().pipeline(transaction=False)
        for account_id, job_id in jobs:
            answer, _writing, generation = keys(account_id, job_id)
            pipe.incr(generation)
            pipe.expire(generation, GENERATION_SECONDS)
            pipe.delete(answer)
        pipe.execute()
    except redis_conn.UNAVAILABLE as err:
        log.warning(
            "job poll: answers of %d deleted jobs not dropped (held %d s at most): %s", len(jobs), ANSWER_SECONDS, err
        )
