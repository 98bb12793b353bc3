"""`make run`: migrate, start an RQ worker and serve on 127.0.0.1:$PORT, all on the configured
database and Redis (SQLite and an embedded Redis when DATABASE_URL / REDIS_URL are unset)."""

import os
import signal
import subprocess
import sys

import uvicorn
from flask_migrate import upgrade

from . import create_app, redis_conn


def main() -> None:
    # Resolve the Redis URL once so the worker and the web process share one embedded server.
    os.environ["REDIS_URL"] = redis_conn.resolve_url(os.environ.get("REDIS_URL", ""))
    app = create_app()
    with app.app.app_context():
        upgrade()
    port = int(os.environ.get("PORT", "5000"))
    worker = subprocess.Popen([sys.executable, "-m", "jobs.worker"])
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through Python instead
    # lets the finally block stop the worker and the embedded Redis.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print(f"Levqor developer portal on http://127.0.0.1:{port}/developer  (API docs: /api/ui/)", flush=True)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")
    finally:
        worker.terminate()
        worker.wait(timeout=10)
        redis_conn.stop_embedded()


if __name__ == "__main__":
    main()
