"""`python -m jobs.worker`: an RQ worker on the app's Redis (the embedded one when REDIS_URL is unset).

Unless --burst or --no-cron is given it also runs RQ's cron scheduler (jobs/schedule.py) in a
thread, so the Procfile's one `worker` process both schedules and executes the periodic jobs.
"""

import argparse
import logging
import threading

from rq import Worker
from rq.cron import CronScheduler

from jobs.tasks import _app
from levqor.queue import QUEUE_NAME

log = logging.getLogger(__name__)
LEADER_KEY = "lvq:cron:leader"
LEADER_TTL = 150  # seconds; the scheduler loop wakes at least once a minute


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
        return super().enqueue_jobs() if self._lead() else []


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
