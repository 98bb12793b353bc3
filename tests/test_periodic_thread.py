"""The background flushers' one shape: tick on a thread, once per process, a last tick at exit."""

import threading

from levqor_core.periodic_thread import PeriodicThread

from .helpers import wait_for


def test_it_ticks_repeatedly_and_starts_one_thread_however_often_started():
    ticks = []
    thread = PeriodicThread("t", 0.01, lambda: ticks.append(threading.current_thread().name))
    for _ in range(5):
        thread.start()
    wait_for(lambda: len(ticks) >= 3, 10, step=0.01, what="three ticks")
    thread.stop()
    assert set(ticks) == {"t"}
    assert sum(1 for t in threading.enumerate() if t.name == "t") <= 1


def test_a_tick_that_raises_is_logged_and_the_next_one_runs(caplog):
    ticks = []

    def flaky():
        ticks.append(1)
        if len(ticks) == 1:
            raise ConnectionError("redis away")

    thread = PeriodicThread("flaky", 0.01, flaky)
    thread.start()
    wait_for(lambda: len(ticks) >= 2, 10, step=0.01, what="a tick after the failed one")
    thread.stop()
    assert "flaky failed; will retry" in caplog.text


def test_the_last_tick_at_exit_runs_once_and_the_thread_ticks_no_more():
    ticks, last = [], []
    thread = PeriodicThread("exit", 0.01, lambda: ticks.append(1), last_tick=lambda: last.append(len(ticks)))
    thread.start()
    wait_for(lambda: ticks, 10, step=0.01, what="a first tick")
    thread.tick_at_exit()
    after = len(ticks)
    assert last == [after]
    # The thread's next wait sees the stop: no tick after the last one (it would find Redis gone).
    stopped = threading.Event()
    threading.Timer(0.1, stopped.set).start()
    stopped.wait()
    assert len(ticks) == after


def test_no_thread_when_the_interval_is_zero_and_a_failing_last_tick_is_only_logged(caplog):
    def boom():
        raise RuntimeError("database away")

    thread = PeriodicThread("off", 0, boom)
    thread.start()
    assert not thread.started
    thread.tick_at_exit()  # never raises at exit
    assert "off: the last tick at exit failed" in caplog.text
