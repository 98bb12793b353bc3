"""`python -m jobs.worker`: an RQ worker on the app's Redis (the embedded one when REDIS_URL is unset)."""

import argparse

from rq import Worker

from jobs.tasks import _app
from levqor.queue import QUEUE_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    args = parser.parse_args()
    app = _app().app
    worker = Worker([QUEUE_NAME], connection=app.extensions["levqor.redis"])
    worker.work(burst=args.burst, with_scheduler=True)


if __name__ == "__main__":
    main()
