"""One shape for a web process's background flushers (usage, request log, request totals).

Each is a daemon thread that ticks every N seconds. It starts once per process, on first use: a
thread started in the app factory would not survive the server forking its workers. It ticks once
more at exit, since a process stopped by its server (a deploy, `--max-requests`) would otherwise
lose its last interval's work with the daemon thread, and then no more, since what a tick uses
(Redis, the database) may be gone next.
"""

import atexit
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicThread:
    """`tick` every `seconds` on a thread of its own (none when seconds <= 0), and `last_tick`
    (default: `tick`) once at exit; the two never overlap. A tick that raises is logged and the
    next one runs as planned."""

    def __init__(
        self, name: str, seconds: float, tick: Callable[[], None], last_tick: Callable[[], None] | None = None
    ):
        self.name = name
        self.seconds = seconds
        self._tick = tick
        self._last_tick = last_tick or tick
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Start the thread, once per process; later calls (every request's) return at once."""
        if self._thread is not None or self.seconds <= 0:
            return
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        atexit.register(self.tick_at_exit)

    def tick(self) -> None:
        """One tick now, never while another runs (the thread's, the exit's or a caller's)."""
        with self._tick_lock:
            self._tick()

    def tick_at_exit(self) -> None:
        """The last tick: the thread ticks no more after it. Errors are logged, never raised."""
        with self._tick_lock:
            self._stopped.set()
            try:
                self._last_tick()
            except Exception:
                log.warning("%s: the last tick at exit failed", self.name, exc_info=True)

    def stop(self) -> None:
        """The thread ticks no more (no last tick)."""
        self._stopped.set()

    def _loop(self) -> None:
        while not self._stopped.wait(self.seconds):
            try:
                with self._tick_lock:
                    if self._stopped.is_set():
                        return
                    self._tick()
            except Exception:  # keep ticking after a Redis or database hiccup
                log.warning("%s failed; will retry", self.name, exc_info=True)
