"""The web dyno's gunicorn worker class (the Procfile's `-k`): uvicorn_worker's UvicornWorker with
a bound on how long a stopping process waits for its open connections.

On SIGTERM (a deploy, a restart, a scale-down; gunicorn's `--max-requests` recycling too) uvicorn
stops accepting and waits for every open connection to finish, by default without a limit. An
event stream (`levqor listen`, `levqor logs tail`) never finishes on its own, so one open stream
held its worker until gunicorn killed it after its 30 s graceful timeout: the platform's whole
grace period, and no clean exit (the usage flusher's last tick, the request log's last batch).
After SHUTDOWN_GRACE_SECONDS uvicorn now cancels what is still open. A stream's client sees the
connection end and reconnects at once (the CLI resumes with Last-Event-ID) to a process that is
up; an ordinary request still running then is cut as a SIGKILL would have cut it.

CONFIG_KWARGS is uvicorn_worker's own way to pass uvicorn settings (its UvicornH11Worker uses it);
`timeout_graceful_shutdown` is a public uvicorn setting."""

from uvicorn_worker import UvicornWorker

# Well inside the 30 s a platform leaves between SIGTERM and SIGKILL, with room for the usage
# flusher's last tick (metering.flusher.EXIT_WAIT_SECONDS) after it.
SHUTDOWN_GRACE_SECONDS = 10


class WebWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS}
