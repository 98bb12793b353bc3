"""`python -m jobs.worker`: an RQ worker on the app's Redis (the embedded one when REDIS_URL is unset).

Unless --burst or --no-cron is given it also runs RQ's cron scheduler (jobs/schedule.py) in a
thread, so the Procfile's one `worker` process both schedules and executes the periodic jobs.
"""

import argparse
import logging
import threading
from datetime import UTC, datetime

from rq import Worker
from rq.cron import CronScheduler, get_cron_job_history_key

from jobs.tasks import _app
from levqor.queue import QUEUE_NAME

log = logging.getLogger(__name__)
LEADER_KEY = "lvq:cron:leader"
LEADER_TTL = 150  # seconds; the scheduler loop wakes at least once a minute
MIN_SLEEP_SECONDS = 1.0


class LeaderCronScheduler(CronScheduler):
    """RQ's CronScheduler that enqueues only while it holds a Redis lease, so running several
    worker processes does not enqueue each periodic job several times."""

    def _install_signal_handlers(self):
        pass  # runs in a thread: the worker in the main thread owns the signals

    def _lead(self) -> bool:
        r = self.connection
        if r.set(LEADER_KEY, self.name, nx=True, ex=LEADER_TTL):
            return True
        if (r.get(LEADER_KEY) or b"").decode() == self.name:
            r.expire(LEADER_KEY, LEADER_TTL)
            return True
        return False

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


def start_cron(connection) -> LeaderCronScheduler:
    scheduler = LeaderCronScheduler(connection=connection)
    scheduler.load_config_from_file("jobs.schedule")
    threading.Thread(target=scheduler.start, name="rq-cron", daemon=True).start()
    return scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--no-cron", action="store_true", help="do not run the periodic-job scheduler")
    args = parser.parse_args()
    app = _app().app
    connection = app.extensions["levqor.redis"]
    if not (args.burst or args.no_cron):
        start_cron(connection)
    worker = Worker([QUEUE_NAME], connection=connection)
    worker.work(burst=args.burst, with_scheduler=True)


if __name__ == "__main__":
    main()
