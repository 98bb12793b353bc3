"""Stopping a job that runs in its worker's own process: the API queue's workers do not fork per job
(jobs/worker.py `ApiWorker`), so RQ's stop-job command, which kills a forked work horse, has nothing to kill.

A cancel sends RQ's stop-job command (levqor_core.apijobs.jobs._stop_if_running); the worker's command
thread calls `request(rq_job_id)`, which signals the process. The signal handler, run by the main
thread, stops the job only while its workflow runs (inside `stoppable`, which the core wraps around the
workflow and nothing else): never in the middle of a database write, so the process, its session and
its connection stay usable and the worker takes its next job at once. A stop asked before the workflow
starts stops it on entry; one asked after it ended is moot (the cancel already won in the database).
"""

import contextlib
import os
import signal
from collections.abc import Iterator

STOP_SIGNAL = signal.SIGUSR1

_running: str | None = None  # the RQ job whose workflow runs now, in this process
_stop: str | None = None  # the RQ job a stop was asked for


class JobStopped(BaseException):
    """Raised in a stopped job's workflow. A BaseException, like KeyboardInterrupt, so a workflow's
    failure handling (`except Exception`, which makes a failed job) lets it through to RQ, which
    marks the job stopped and does not retry it."""


def _on_signal(_signum, _frame) -> None:
    if _stop is not None and _stop == _running:
        raise JobStopped(_stop)


def install() -> None:
    """Handle STOP_SIGNAL in this process (its default action ends the process)."""
    signal.signal(STOP_SIGNAL, _on_signal)


def request(rq_job_id: str) -> None:
    """Stop RQ job `rq_job_id` if its workflow runs in this process, now or later (any thread)."""
    global _stop
    _stop = rq_job_id
    os.kill(os.getpid(), STOP_SIGNAL)


@contextlib.contextmanager
def stoppable(rq_job_id: str) -> Iterator[None]:
    """The part of RQ job `rq_job_id` a stop may interrupt (raising JobStopped)."""
    global _running
    if _stop == rq_job_id:
        raise JobStopped(rq_job_id)
    _running = rq_job_id
    try:
        yield
    finally:
        _running = None
