"""levqor_core.web.wsgi_bridge: Flask's responses reach the ASGI server whole, in order, streamed
as they are produced, with a bounded number in flight, and a failed send stops the producing thread."""

import asyncio
import sys
import threading

import pytest

from levqor_core.web import wsgi_bridge
from levqor_core.web.wsgi_bridge import WSGIBridge

from .helpers import run_on_own_loop

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"testserver")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 80),
}


def serve(app, send, method="GET", body=b"", window=wsgi_bridge.WINDOW):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def run():
        await WSGIBridge(app, workers=2, window=window)({**SCOPE, "method": method}, receive, send)

    run_on_own_loop(run())


def collecting():
    sent = []

    async def send(message):
        sent.append(message)

    return sent, send


def test_a_response_arrives_whole_with_the_start_handed_over_with_its_first_chunk(monkeypatch):
    handed = []
    original = wsgi_bridge._Exchange._post
    monkeypatch.setattr(
        wsgi_bridge._Exchange, "_post", lambda self, messages: handed.append(1) or original(self, messages)
    )

    def app(environ, start_response):
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Echo", environ["REQUEST_METHOD"])])
        return [b"hello"]

    sent, send = collecting()
    serve(app, send, method="POST")
    assert sent == [
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"text/plain"), (b"x-echo", b"POST")],
        },
        {"type": "http.response.body", "body": b"hello", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
    ]
    assert handed == [1]  # one hand-off from the thread to the loop for the whole response


def test_a_response_without_a_body_still_starts_and_ends():
    def app(environ, start_response):
        start_response("204 No Content", [])
        return [b""]

    sent, send = collecting()
    serve(app, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 204 and sent[1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_the_request_body_reaches_the_app():
    def app(environ, start_response):
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()[::-1]]

    sent, send = collecting()
    serve(app, send, method="POST", body=b"abc")
    assert sent[1]["body"] == b"cba"


def test_each_chunk_of_a_streamed_body_goes_out_before_the_next_is_made():
    first_out = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [])
        yield b"one"
        # A bridge that held chunks back until the app was done would never let this wait end.
        assert first_out.wait(timeout=10), "the first chunk was not sent while the app was still running"
        yield b"two"

    sent = []

    async def send(message):
        sent.append(message)
        if message.get("body") == b"one":
            first_out.set()

    serve(app, send)
    assert [m.get("body") for m in sent] == [None, b"one", b"two", b""]


def test_a_slow_client_holds_the_thread_at_the_window():
    window = 3
    made = []
    ahead = []

    def app(environ, start_response):
        start_response("200 OK", [])
        for i in range(40):
            made.append(i)
            yield b"x"

    sent = []

    async def send(message):
        if message["type"] == "http.response.body" and message["body"]:
            await asyncio.sleep(0.002)  # a slow reader
            sent.append(message)
            ahead.append(len(made) - len(sent))

    serve(app, send, window=window)
    assert len(sent) == 40
    assert max(ahead) <= window + 1  # never more than the window (and the chunk being made) ahead


def test_a_failed_send_stops_the_thread_and_closes_the_apps_iterable():
    made = []
    closed = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            for i in range(1000):
                made.append(i)
                yield b"x" * 100
        finally:
            closed.set()

    async def send(message):
        if message["type"] == "http.response.body":
            raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        serve(app, send, window=4)
    assert closed.wait(timeout=10)
    assert len(made) < 20  # it stopped soon after the failure, not after making all 1000


def test_an_app_that_raises_before_responding_raises_with_nothing_sent():
    def app(environ, start_response):
        raise LookupError("boom")

    sent, send = collecting()
    with pytest.raises(LookupError, match="boom"):
        serve(app, send)
    assert sent == []  # Connexion's exception layer can still answer 500


def test_start_response_with_exc_info_replaces_a_start_not_sent_yet():
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Second", "1")], sys.exc_info())
        return [b"error"]

    sent, send = collecting()
    serve(app, send)
    assert sent[0]["status"] == 500 and sent[0]["headers"] == [(b"x-second", b"1")]


def test_the_app_runs_flask_behind_the_bridge_and_a_large_file_arrives_byte_for_byte(cx, client, monkeypatch):
    assert isinstance(cx._middleware_app.asgi_app, WSGIBridge)
    from portal.views.assets import NODE_MODULES, VENDOR

    # The portal serves no file this large: axe-core's (the accessibility tests' own) stands in for one.
    monkeypatch.setitem(VENDOR, "axe.js", "axe-core/axe.js")
    expected = (NODE_MODULES / VENDOR["axe.js"]).read_bytes()
    assert len(expected) > 100 * 8192  # many of the file wrapper's chunks: the window fills
    got = client.get("/vendor/axe.js")
    assert got.status_code == 200 and got.content == expected
    assert int(got.headers["content-length"]) == len(expected)
