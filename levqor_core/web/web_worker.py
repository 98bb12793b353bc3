"""The web dyno's gunicorn worker class (the Procfile's `-k`): uvicorn_worker's UvicornWorker whose
server ends the open event streams when it stops, with a bound on how long it waits for the rest.

On SIGTERM (a deploy, a restart, a scale-down; gunicorn's `--max-requests` recycling too) uvicorn
stops accepting and waits for every open connection to finish, by default without a limit. An
event stream (`levqor listen`, `levqor logs tail`) never finishes on its own: one open stream held
its worker until gunicorn killed it after its 30 s graceful timeout, with no clean exit (the usage
flusher's last tick, the request log's last batch). Two things now:

- StreamsEndingServer tells the streams first (levqor_core.streams.hub.stop_streams): each sends
  `end` (`reason`: `restarting`) and finishes, so its client reconnects at once, to a process that
  is up, from its Last-Event-ID, and the worker stops in well under a second instead of cutting
  them (decision record 0016).
- After SHUTDOWN_GRACE_SECONDS uvicorn cancels what is still open: an ordinary request still running
  then is cut as a SIGKILL would have cut it.

CONFIG_KWARGS is uvicorn_worker's own way to pass uvicorn settings (its UvicornH11Worker uses it);
`timeout_graceful_shutdown` is a public uvicorn setting. `_serve` is uvicorn_worker's (0.4.0), the
one place it builds its Server: overridden to build ours (tests/test_framework_privates.py)."""

import logging
import socket
import sys

import uvicorn
from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from levqor_core.streams.hub import stop_streams

log = logging.getLogger(__name__)

# Well inside the 30 s a platform leaves between SIGTERM and SIGKILL, with room for the usage
# flusher's last tick (metering.flusher.EXIT_WAIT_SECONDS) after it.
SHUTDOWN_GRACE_SECONDS = 10


class StreamsEndingServer(uvicorn.Server):
    """uvicorn's Server, which ends this process's event streams before its own shutdown waits for
    open connections (`make run` serves with it too)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if ended := stop_streams():
            log.info("ending %d open event stream(s); their clients reconnect", ended)
        await super().shutdown(sockets)


class WebWorker(UvicornWorker):
    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS}

    async def _serve(self) -> None:
        # uvicorn_worker 0.4.0's _serve, with StreamsEndingServer for its Server.
        self.config.app = self.wsgi
        server = StreamsEndingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
