"""Stopping a job in its API worker's own process (jobs/stopping.py): only inside its workflow.

Real signals to this process, as the worker's command thread sends them; the live worker's cancel
is in tests/test_worker_as_shipped.py."""

import signal
import threading
import time

import pytest

from jobs import stopping


@pytest.fixture(autouse=True)
def _handler():
    previous = signal.getsignal(stopping.STOP_SIGNAL)
    stopping.install()
    yield
    stopping._stop = stopping._running = None
    signal.signal(stopping.STOP_SIGNAL, previous)


def test_a_stop_asked_from_another_thread_interrupts_the_workflow_s_sleep():
    threading.Timer(0.2, stopping.request, args=("run-a",)).start()
    started = time.monotonic()
    with pytest.raises(stopping.JobStopped), stopping.stoppable("run-a"):
        time.sleep(10)
    assert time.monotonic() - started < 5


def test_a_stop_asked_before_the_workflow_stops_it_on_entry():
    stopping.request("run-b")  # while the job's running → queued write would still be going on
    with pytest.raises(stopping.JobStopped), stopping.stoppable("run-b"):
        pytest.fail("the workflow ran")


def test_a_stop_outside_the_workflow_or_for_another_job_interrupts_nothing():
    stopping.request("run-c")  # no workflow runs: a database write here goes on
    time.sleep(0.05)
    with stopping.stoppable("run-d"):  # another job's workflow
        stopping.request("run-c")
        time.sleep(0.05)
    # A stop for the job that just ended is not taken by the next one either.
    with stopping.stoppable("run-e"):
        time.sleep(0.05)


def test_a_workflow_s_own_error_handling_does_not_swallow_a_stop():
    threading.Timer(0.1, stopping.request, args=("run-f",)).start()
    with pytest.raises(stopping.JobStopped), stopping.stoppable("run-f"):
        try:
            time.sleep(10)
        except Exception:  # what run_workflow does with a workflow's failure
            pytest.fail("the stop was taken for the workflow's own error")
