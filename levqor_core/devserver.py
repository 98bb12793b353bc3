"""`make run`: migrate, start the worker (jobs/worker.py, as the Procfile's `worker`) and serve on
127.0.0.1:$PORT, all on the configured database and Redis (SQLite and an embedded Redis when
DATABASE_URL / REDIS_URL are unset). A worker that exits is started again, and the log says so."""

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading

import uvicorn
from flask_migrate import upgrade

from levqor_core import redis_conn
from levqor_core.app import create_app
from levqor_core.web.web_worker import SHUTDOWN_GRACE_SECONDS, StreamsEndingServer

RESTART_DELAY_SECONDS = 1.0


class WorkerSupervisor:
    """Keeps one `python -m jobs.worker` running beside the web server."""

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._stopping = threading.Event()

    def start(self) -> "WorkerSupervisor":
        self.process = subprocess.Popen([sys.executable, "-m", "jobs.worker"])
        threading.Thread(target=self._watch, name="worker-supervisor", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._stopping.wait(RESTART_DELAY_SECONDS):
            code = self.process.poll()
            if code is None or self._stopping.is_set():
                continue
            self.restarts += 1
            print(f"make run: the worker exited with status {code}; starting it again", file=sys.stderr, flush=True)
            self.process = subprocess.Popen([sys.executable, "-m", "jobs.worker"])

    def stop(self) -> None:
        self._stopping.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()  # a warm shutdown: the running jobs finish first
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def main() -> None:
    # Resolve the Redis URL once so the worker and the web process share one embedded server.
    os.environ["REDIS_URL"] = redis_conn.resolve_url(os.environ.get("REDIS_URL", ""))
    # Stopped at exit, and registered before anything else is: atexit runs its hooks last-first, so
    # the web process's last flushes (usage, request totals, request log; registered on the first
    # request) still find the embedded Redis.
    atexit.register(redis_conn.stop_embedded)
    # A response that does not match the spec is a 500 here, where the developer sees it.
    os.environ.setdefault("VALIDATE_RESPONSES", "1")
    app = create_app()
    with app.app.app_context():
        upgrade()
    port = int(os.environ.get("PORT", "5000"))
    worker = WorkerSupervisor().start()
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through Python instead
    # lets the finally block stop the worker, and atexit the embedded Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(f"Levqor developer portal on http://127.0.0.1:{port}/developer  (API reference: /docs/api)", flush=True)
        # One process, named: uvicorn.run takes WEB_CONCURRENCY (the Procfile's, in many a copied
        # environment) as a worker count, which it cannot start from an app object, and never served.
        level = os.environ.get("LOG_LEVEL", "INFO").lower()
        # What uvicorn.run does for one process, with the web dyno's server: open event streams
        # (`levqor listen`) are ended at Ctrl-C, which otherwise waited on them for ever.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level=level, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS
        )
        server = StreamsEndingServer(config)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            sys.exit(1)
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
