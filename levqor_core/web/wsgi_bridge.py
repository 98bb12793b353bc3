"""The hand-off between the event loop and the threads Flask runs in, in place of a2wsgi's.

Connexion runs Flask through a2wsgi, which hands each response message (the start, each body
chunk, an empty last one) from Flask's thread to the event loop with run_coroutine_threadsafe and
makes the thread wait until the loop has queued it: three round trips between the two threads for
every response, each waking both. Here the thread hands the start over together with the first
body chunk (PEP 3333 holds the headers back until then anyway) and does not wait for the loop; a
window of messages in flight bounds what a large or streamed body buffers. The loop sends the end
itself once Flask's thread is done. The environ and the request body reader are a2wsgi's.

A send that raises stops the thread at its next chunk. uvicorn's send does not raise after the
client left (it drops the message), so a response to a gone client is still produced in full, as
with a2wsgi; the window keeps that to a few chunks in memory at a time.
"""

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from a2wsgi.wsgi import Body, build_environ

# As Connexion's a2wsgi: Flask's request threads (the database pool is sized to them), and the
# response messages a thread may have in flight before it waits for the loop to send them.
WORKERS = 10
WINDOW = 10
_END = {"type": "http.response.body", "body": b"", "more_body": False}


class ClientGone(Exception):
    """The response could not be sent: the thread stops producing it."""


class _Exchange:
    """One response, from the WSGI app in its thread to the ASGI server on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, window: int):
        self.loop = loop
        self.window = window
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.room = threading.Semaphore(window)
        self.gone = False
        self.start: dict | None = None
        self.started = False

    # -- in Flask's thread --

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])  # PEP 3333: too late to change the response
        self.start = {
            "type": "http.response.start",
            "status": int(status.split(" ", 1)[0]),
            "headers": [
                (name.strip().encode("latin1").lower(), value.strip().encode("latin1")) for name, value in headers
            ],
        }
        return self.write

    def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        body = {"type": "http.response.body", "body": chunk, "more_body": True}
        if self.started:
            self._post((body,))
        else:
            self.started = True
            self._post((self.start, body))

    def _post(self, messages: tuple) -> None:
        self.room.acquire()
        if self.gone:
            raise ClientGone
        self.loop.call_soon_threadsafe(self.inbox.put_nowait, messages)

    def run(self, app, environ: dict) -> None:
        try:
            iterable = app(environ, self.start_response)
            try:
                for chunk in iterable:
                    self.write(chunk)
            finally:
                close = getattr(iterable, "close", None)
                if close is not None:
                    close()
        except ClientGone:
            pass  # the loop has the reason and raises it

    # -- on the event loop --

    async def deliver(self, send) -> None:
        try:
            while (messages := await self.inbox.get()) is not None:
                for message in messages:
                    await send(message)
                self.room.release()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Nothing more will be sent: a thread waiting for room wakes up and gives up."""
        self.gone = True
        self.room.release(self.window + 1)


class WSGIBridge:
    """An ASGI app running a WSGI app in a pool of threads (what a2wsgi.WSGIMiddleware does)."""

    def __init__(self, app, workers: int = WORKERS, window: int = WINDOW):
        self.app = app
        self.window = window
        self.executor = ThreadPoolExecutor(thread_name_prefix="WSGI", max_workers=workers)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            for reply in ("lifespan.startup.complete", "lifespan.shutdown.complete"):
                await receive()
                await send({"type": reply})
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        loop = asyncio.get_running_loop()
        exchange = _Exchange(loop, self.window)
        environ = build_environ(scope, Body(loop, receive))
        delivering = loop.create_task(exchange.deliver(send))
        try:
            # Connexion's context (the operation, the scope) travels with the copied context.
            await loop.run_in_executor(self.executor, contextvars.copy_context().run, exchange.run, self.app, environ)
        except BaseException:
            # The app raised, or this task was cancelled: as with a2wsgi, what is not sent yet is
            # dropped (a response not started yet is then Connexion's 500), and the thread stops.
            exchange.stop()
            delivering.cancel()
            raise
        exchange.inbox.put_nowait(None)
        await delivering
        if not exchange.started:  # no body: a HEAD, a 204, an empty body
            if exchange.start is None:
                raise RuntimeError("the WSGI app returned without calling start_response")
            await send(exchange.start)
        await send(_END)
