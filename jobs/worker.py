"""`python -m jobs.worker`: the Procfile's `worker` process, on the app's Redis (the embedded one
when REDIS_URL is unset).

As shipped it is a supervisor built on RQ's WorkerPool:
- PERIODIC_WORKERS workers serve only the periodic queue, so a backlog of API jobs never delays
  the scheduled maintenance jobs, a long maintenance job never delays API jobs, and an hour-long
  Notion sync does not hold up `requeue-jobs` or the quota alerts;
- WEBHOOK_WORKERS workers serve only the webhook queue (deliveries and their retries, scheduled by
  RQ's scheduler in those workers), so a slow or dead receiver never delays anything else;
- WORKER_CONCURRENCY workers (default 4) serve the API queue, so one account's long jobs do not
  hold up other accounts' short ones (each account's jobs in flight are capped by tier, too);
- a worker that dies (SIGKILL, out of memory, Redis gone mid-command) is started again, once Redis
  answers; the supervisor itself never exits on a Redis error;
- RQ's cron scheduler (jobs/schedule.py) runs in a thread of the supervisor, enqueueing only while
  it holds a Redis lease, so several `worker` processes do not enqueue a periodic job twice.

`--burst` runs one plain RQ worker on every queue until they are empty (tests, one-off drains).
"""

import argparse
import functools
import gc
import logging
import os
import threading
import time
from datetime import UTC, datetime

import redis
from rq import SimpleWorker, Worker
from rq.cron import CronScheduler, get_cron_job_history_key
from rq.exceptions import StopRequested
from rq.registry import StartedJobRegistry
from rq.worker_pool import WorkerPool

from jobs import stopping
from jobs.tasks import _app, warm
from levqor_core import redis_conn
from levqor_core.queue import API_QUEUE, PERIODIC_QUEUE, QUEUES, WEBHOOK_QUEUE

log = logging.getLogger(__name__)
LEADER_KEY = "lvq:cron:leader"
LEADER_TTL = 150  # seconds; the scheduler loop wakes at least once a minute
MIN_SLEEP_SECONDS = 1.0
REDIS_RETRY_SECONDS = 2.0
# RQ blocks on the queues for worker_ttl - 15 s. A signal that lands on one of the worker's
# other threads only runs its handler when that wait ends, so a short wait keeps a SIGTERM
# (a deploy, a dyno restart: 30 s before SIGKILL) a warm shutdown. RQ's default is 420.
WORKER_TTL = 30
PERIODIC_WORKERS = 2
WEBHOOK_WORKERS = 2  # deliveries wait up to 10 s on a receiver: two keep one slow one from holding all
HARD_TIMEOUT_GRACE = 60  # seconds past a job's timeout before its API worker ends itself (RQ's monitor's margin)


class _Registered:
    """A short blocking wait, and registering again when Redis comes back empty (otherwise the worker
    keeps working but no operator or dashboard can see it); stopping when its supervisor is gone."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        # Also how soon RQ's scheduler process (retries) is started again after a Redis restart.
        kwargs.setdefault("maintenance_interval", 60)
        super().__init__(*args, **kwargs)
        self._parent_pid = os.getppid()

    def heartbeat(self, timeout=None, pipeline=None):
        if pipeline is None and os.getppid() != self._parent_pid:
            # The supervisor was killed (SIGKILL leaves its children running): stop, rather
            # than run on beside the workers its replacement starts.
            self.log.warning("Worker %s: its supervisor is gone; stopping", self.name)
            raise StopRequested
        if pipeline is None and not self.connection.hexists(self.key, "birth"):
            self.log.warning("Worker %s: Redis lost its registration (restarted?); registering again", self.name)
            self.connection.delete(self.key)
            self.register_birth()
        super().heartbeat(timeout, pipeline)


class LevqorWorker(_Registered, Worker):
    """RQ's forking Worker (a work horse per job): the periodic and webhook queues, and `--burst`."""


class ApiWorker(_Registered, SimpleWorker):
    """The API queue's worker: runs each job in its own process, as RQ's SimpleWorker does, so a job
    reuses the process's database connection, compiled statements and app instead of paying a fork,
    a new connection and cold caches (~50 ms of CPU per job; docs/decisions/0015-api-worker-no-fork.md).

    What the work horse gave is kept:
    - a job's timeout: RQ's death penalty (SIGALRM) raises in the job, as it did in the horse; a job
      still running HARD_TIMEOUT_GRACE s after its timeout (stuck where no exception can reach it)
      ends the process, as RQ's monitor killed the horse, and the pool starts a fresh one;
    - a cancel stops a running job: RQ's stop-job command stops its workflow (jobs/stopping.py);
    - a clean state per job: after a job that failed in RQ (a timeout, an error outside its workflow,
      which may have left a write half done) the process exits and the pool starts a fresh one, and
      it does after WORKER_MAX_JOBS jobs anyway, so a leaking workflow cannot grow it for ever;
    - a crash (the OOM killer, a segfault) takes the worker with the job: the pool starts another
      and hands the job to RQ's abandoned-job handling at once, and `requeue-jobs` runs it again."""

    def __init__(self, *args, max_jobs: int = 1000, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_jobs = max_jobs
        self._deadline: float | None = None
        self._fresh_process_needed = False

    def work(self, *args, **kwargs):
        kwargs.setdefault("max_jobs", self.max_jobs)
        stopping.install()
        threading.Thread(target=self._watch, name="rq-job-watchdog", daemon=True).start()
        return super().work(*args, **kwargs)

    def execute_job(self, job, queue):
        self._stopped_job_id = None
        timeout = job.timeout or queue.DEFAULT_TIMEOUT  # as RQ's death penalty reads it; -1: none
        self._deadline = time.monotonic() + timeout + HARD_TIMEOUT_GRACE if timeout > 0 else None
        try:
            super().execute_job(job, queue)
        finally:
            self._deadline = None
        if self._fresh_process_needed:
            self.log.warning("Worker %s: job %s failed in RQ; exiting for a fresh process", self.name, job.id)
            self._stop_requested = True  # the work loop ends; the pool starts another worker

    def kill_horse(self, sig=None):
        # RQ's stop-job command, after it checked that this worker runs the job.
        if self._stopped_job_id:
            stopping.request(self._stopped_job_id)

    def handle_exception(self, job, *exc_info):
        # RQ logs every exception out of a job as an ERROR with its traceback. A stop this worker
        # was asked for (a user's cancel of a running job) is the cancel working, not a failure.
        if self._stopped_job_id == job.id and isinstance(exc_info[1], stopping.JobStopped):
            self.log.info("Worker %s: job %s stopped: canceled while it ran", self.name, job.id)
            return
        super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string=""):
        if self._stopped_job_id != job.id:  # a stop only ever interrupts a workflow: the state is clean
            self._fresh_process_needed = True
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry, exc_string=exc_string)

    def _watch(self) -> None:
        while True:
            time.sleep(1)
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                self.log.error("Worker %s: a job is %d s past its timeout; exiting", self.name, HARD_TIMEOUT_GRACE)
                os._exit(1)


# Holds the lease if free or already ours (renewed), else not: 1 or 0.
LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
return 0
"""


class LeaderCronScheduler(CronScheduler):
    """RQ's CronScheduler that enqueues only while it holds a Redis lease, so running several
    worker processes does not enqueue each periodic job several times."""

    def _install_signal_handlers(self):
        pass  # runs in a thread: the process's main thread owns the signals

    def _lead(self) -> bool:
        """Take the lease or renew our own, in one atomic step: a GET then EXPIRE could renew a
        lease that expired and went to another process in between (two leaders)."""
        return bool(self.connection.eval(LEASE_SCRIPT, 1, LEADER_KEY, self.name, LEADER_TTL))

    def enqueue_jobs(self):
        if self._lead():
            return super().enqueue_jobs()
        self._follow()
        return []

    def _follow(self) -> None:
        """Move each due job past the run the leader has already enqueued (RQ's shared history),
        so this process sleeps instead of polling and, should it take over, does not enqueue that
        run again. A run the leader has not enqueued stays due: a new leader makes it late, not lost."""
        for job in self._cron_jobs:
            if not job.should_run():
                continue
            newest = self.connection.zrevrange(get_cron_job_history_key(job.name), 0, 0, withscores=True)
            due = job.next_enqueue_time
            if newest and (due is None or newest[0][1] >= due.timestamp()):
                job.set_enqueue_time(datetime.fromtimestamp(newest[0][1], UTC))

    def calculate_sleep_interval(self) -> float:
        # A due run the leader has not enqueued yet must not turn the loop into a busy poll.
        return max(super().calculate_sleep_interval(), MIN_SLEEP_SECONDS)


def _keep_scheduling(scheduler: LeaderCronScheduler) -> None:
    """RQ's scheduler loop ends on the first Redis error; a restart of Redis must not end it here."""
    while True:
        try:
            scheduler.start()
            return
        except redis.RedisError as err:
            log.warning("cron scheduler: Redis unavailable (%s); retrying in %.0f s", err, REDIS_RETRY_SECONDS)
            time.sleep(REDIS_RETRY_SECONDS)
        except Exception:
            log.exception("cron scheduler failed; starting it again in %.0f s", REDIS_RETRY_SECONDS)
            time.sleep(REDIS_RETRY_SECONDS)


def start_cron(connection) -> LeaderCronScheduler:
    scheduler = LeaderCronScheduler(connection=connection)
    scheduler.load_config_from_file("jobs.schedule")
    threading.Thread(target=_keep_scheduling, args=(scheduler,), name="rq-cron", daemon=True).start()
    return scheduler


class LevqorWorkerPool(WorkerPool):
    """RQ's WorkerPool, which starts a worker again when one dies, with PERIODIC_WORKERS of its
    workers kept for the periodic queue and WEBHOOK_WORKERS for webhook deliveries (a slow
    receiver holds one of those, never an API worker); and no respawn storm while Redis is down."""

    def __init__(self, connection: redis.Redis, api_workers: int, api_max_jobs: int = 1000):
        super().__init__(
            [API_QUEUE],
            connection=connection,
            num_workers=api_workers + PERIODIC_WORKERS + WEBHOOK_WORKERS,
            worker_class=LevqorWorker,
        )
        self._api_worker = functools.partial(ApiWorker, max_jobs=api_max_jobs)
        self._queues_by_worker: dict[str, list[str]] = {}
        self._redis_down_since: float | None = None
        self._recycled = 0

    def get_worker_process(self, name, burst, _sleep=0, logging_level="INFO"):
        alive = {n for n in self.worker_dict if n != name}
        serving = [self._queues_by_worker.get(n) for n in alive]
        # WorkerPool hands every worker self._queue_names; set it to this worker's share first.
        if serving.count([PERIODIC_QUEUE]) < PERIODIC_WORKERS:
            self._queue_names = [PERIODIC_QUEUE]
        elif serving.count([WEBHOOK_QUEUE]) < WEBHOOK_WORKERS:
            self._queue_names = [WEBHOOK_QUEUE]
        else:
            self._queue_names = [API_QUEUE]
        # ...and its class: the API queue's workers run jobs in their own process, the others fork.
        self.worker_class = self._api_worker if self._queue_names == [API_QUEUE] else LevqorWorker
        self._queues_by_worker[name] = self._queue_names
        return super().get_worker_process(name, burst, _sleep=_sleep, logging_level=logging_level)

    def handle_dead_worker(self, worker_data):
        super().handle_dead_worker(worker_data)
        queues = self._queues_by_worker.pop(worker_data.name, None)
        if worker_data.process.exitcode == 0:
            self._recycled += 1  # an API worker done with its WORKER_MAX_JOBS, or wanting a fresh process
        elif queues == [API_QUEUE]:
            self._abandon_current_job(worker_data.name)

    def _abandon_current_job(self, worker_name: str) -> None:
        """The job an API worker was running when it died (killed, out of memory) goes through RQ's
        abandoned-job handling now, as a killed work horse's did, not when its registry entry expires
        (its timeout + 60 s later); `requeue-jobs` then runs it again."""
        try:
            key = f"{Worker.redis_worker_namespace_prefix}{worker_name}"
            job_id = self.connection.hget(key, "current_job")
            if (dead := Worker.find_by_key(key, connection=self.connection)) is not None:
                dead.register_death()  # off the list operators see, now rather than when its key expires
            if not job_id:
                return
            registry = StartedJobRegistry(API_QUEUE, connection=self.connection)
            prefix = job_id.decode() + ":"
            members = [m for m, _ in self.connection.zscan_iter(registry.key, match=prefix + "*")]
            if members:
                self.connection.zadd(registry.key, dict.fromkeys(members, 0), xx=True)
                registry.cleanup(timestamp=1)  # entries due by 1970: only the ones just marked
            self.log.warning("Worker %s died running job %s: handled as abandoned", worker_name, job_id.decode())
        except redis.RedisError as err:
            self.log.warning("could not hand on the job of dead worker %s: %s", worker_name, err)

    def check_workers(self, respawn: bool = True) -> None:
        self._recycled = 0
        self.reap_workers()
        missing = self.num_workers - len(self.worker_dict)
        if respawn and missing and self.status != self.Status.STOPPED:
            if not self._redis_reachable():
                return  # a new worker would die at once; try again on the next tick (1 s)
            if missing > self._recycled:
                self.log.warning("starting %d worker(s) again", missing)
            else:
                self.log.info("starting %d worker(s) in place of ones that exited to be replaced", missing)
        super().check_workers(respawn=respawn)

    def _redis_reachable(self) -> bool:
        try:
            self.connection.ping()
        except redis.RedisError as err:
            if self._redis_down_since is None:
                self._redis_down_since = time.monotonic()
                self.log.warning("Redis unreachable (%s): workers start again when it answers", err)
            return False
        if self._redis_down_since is not None:
            self.log.info("Redis answers again after %.0f s", time.monotonic() - self._redis_down_since)
            self._redis_down_since = None
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", action="store_true", help="one worker on every queue, exit when they are empty")
    parser.add_argument("--no-cron", action="store_true", help="do not run the periodic-job scheduler")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="workers on the API queue (default $WORKER_CONCURRENCY, 4); two more serve the periodic queue",
    )
    args = parser.parse_args()
    config = _app().app.config
    url = config["REDIS_URL"]
    connection = redis_conn.worker_client(url)
    if args.burst:
        LevqorWorker(list(QUEUES), connection=connection).work(
            burst=True, with_scheduler=True, logging_level=config["LOG_LEVEL"]
        )
        return
    warm()
    if not args.no_cron:
        start_cron(redis_conn.worker_client(url))
    # What start-up and warm() built is shared with every worker the pool forks. A child's first
    # full collection writes to each of those objects' headers and so copies every page they sit
    # on: an API worker went from ~20 to ~71 MB of PSS once it had run enough jobs (bench/soak.py,
    # four of them at once took the tree past 512 MB). Frozen, the collector leaves them alone.
    gc.freeze()
    LevqorWorkerPool(
        connection,
        api_workers=max(1, args.concurrency or config["WORKER_CONCURRENCY"]),
        api_max_jobs=config["WORKER_MAX_JOBS"],
    ).start(burst=False, logging_level=config["LOG_LEVEL"])


if __name__ == "__main__":
    main()
