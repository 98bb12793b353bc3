"""The `levqor` CLI end to end (issue 23): installed from the built Python SDK into a fresh
virtualenv, against the app as the Procfile's `web` line serves it (gunicorn, uvicorn workers),
through a TCP proxy the test can cut to drop the CLI's stream. Its output is read through a pipe,
so each line must arrive while the process still runs (line-buffered)."""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from standardwebhooks.webhooks import Webhook

from . import helpers as shipped
from . import signup
from .servers import free_port
from .webhook_helpers import Receiver


class CuttableProxy:
    """A TCP proxy on loopback whose open connections can be cut at once (a dropped network)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket):
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass  # the other side, or cut(), closed it
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self):
        with self.lock:
            cut, self.open = self.open, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self):
        self.listener.close()
        self.cut()


class Cli:
    """A running `levqor` command; its stdout and stderr read line by line as they arrive."""

    def __init__(self, levqor: Path, env: dict, *args: str):
        self.proc = subprocess.Popen(
            [str(levqor), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            # As from a terminal: a suite started in the background (`make test &`) ignores SIGINT,
            # a child inherits that, and Python then never turns Ctrl-C into KeyboardInterrupt.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.out: queue.Queue = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.out.put), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _read(stream, put):
        for line in stream:
            put(line.rstrip("\n"))

    def line(self, timeout: float = 10, containing: str = "") -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line containing {containing!r} within {timeout}s; stderr: {self.err}"
            try:
                found = self.out.get(timeout=remaining)
            except queue.Empty:
                continue
            if containing in found:
                return found

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def served(postgres_server, redis_server, tmp_path_factory):
    """The Procfile's web line on a fresh database and an empty Redis; (base URL, env)."""
    tmp = tmp_path_factory.mktemp("cli-web")
    processes = shipped.procfile()
    port = free_port()
    redis.Redis.from_url(redis_server.url).flushdb()
    env = shipped.shipped_env(
        postgres_server.create_database(f"cli_{uuid.uuid4().hex[:8]}"), redis_server.url, port, tmp
    )
    # Heartbeats each second: a cut connection is noticed in seconds (the CLI waits 3 heartbeats).
    env["STREAM_HEARTBEAT_SECONDS"] = "1"
    release = subprocess.run(
        ["bash", "-c", processes["release"]], cwd=shipped.ROOT, env=env, capture_output=True, text=True
    )
    assert release.returncode == 0, release.stderr[-2000:]
    web = shipped.start_procfile_line(processes["web"], env, output=(tmp / "web.out").open("w+"))
    # The worker too: a sandbox delay job's end reaches the streams from its webhook queue.
    worker = shipped.start_procfile_line(
        processes["worker"], env | {"WORKER_CONCURRENCY": "1"}, output=(tmp / "worker.out").open("w+")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        shipped.wait_for(lambda: shipped.web_is_up(base), 60, what="the web process answering")
        yield base, env
    finally:
        shipped.stop_procfile_line(worker)
        shipped.stop_procfile_line(web)


@pytest.fixture
def developer(served):
    base, env = served
    email = f"cli-{uuid.uuid4().hex[:8]}@example.com"
    return signup.developer_with_key(base, email, lambda web, email: signup.confirm_with_cli(env, email))


@pytest.fixture
def levqor(python_sdk) -> Path:
    return python_sdk.parent / "levqor"


@pytest.fixture
def proxy(served):
    port = int(served[0].rsplit(":", 1)[1])
    cut = CuttableProxy(port)
    yield cut
    cut.close()


def cli_env(key: str | None, base: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_")}
    return env | {"LEVQOR_BASE_URL": f"{base}/api"} | ({"LEVQOR_API_KEY": key} if key else {})


def _wait(predicate, what: str, timeout: float = 10):
    return shipped.wait_for(predicate, timeout, step=0.1, what=what)


def test_listen_forwards_signed_events_resumes_after_a_drop_and_logs_tail_follows(served, developer, levqor, proxy):
    base, _ = served
    key = developer
    env = cli_env(key, f"http://127.0.0.1:{proxy.port}")
    api = httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=10)
    receiver = Receiver()
    listen = Cli(levqor, env, "listen", "--forward-to", receiver.url(), "--sandbox")
    tail = Cli(levqor, env, "logs", "tail")
    try:
        ready = listen.line(containing="Ready!")
        secret = ready.rsplit(" ", 1)[-1]
        assert secret.startswith("whsec_")
        printed = subprocess.run(
            [str(levqor), "listen", "--print-secret", "--sandbox"], env=env, capture_output=True, text=True, timeout=30
        )
        assert (printed.returncode, printed.stdout.strip()) == (0, secret)

        # A sandbox job succeeds at once: its job.succeeded reaches the local receiver, verifiable.
        job = api.post("/api/sandbox/v1/jobs", json={"workflow": "echo", "input": {"message": "hi"}}).json()
        line = listen.line(containing="job.succeeded")
        assert "[200]" in line
        first = _wait(lambda: receiver.received[:1], "the forwarded job.succeeded")[0]
        event = Webhook(secret).verify(first["body"], first["headers"])
        assert (event["type"], event["data"]["id"]) == ("job.succeeded", job["id"])

        triggered = subprocess.run(
            [str(levqor), "trigger", "job.failed", "--sandbox"], env=env, capture_output=True, text=True, timeout=30
        )
        assert triggered.returncode == 0, triggered.stderr
        assert "[200]" in listen.line(containing="job.failed")
        failed = Webhook(secret).verify(receiver.received[1]["body"], receiver.received[1]["headers"])
        assert failed["type"] == "job.failed" and failed["data"]["test"] is True

        # logs tail: a 404's Request-Id within 5 s of the call.
        _wait(lambda: any("Tailing" in x for x in tail.err), "logs tail to be connected")
        missing = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293")
        called = time.monotonic()
        shown = tail.line(timeout=5, containing=missing.headers["request-id"])
        assert time.monotonic() - called < 5
        assert " 404 " in shown and "/api/v1/jobs/job_0a1b2c3d4e5f60718293" in shown

        # The network drops; events emitted meanwhile arrive once the CLI has reconnected.
        proxy.cut()
        missed = [
            api.post("/api/sandbox/v1/events/trigger", json={"type": t}).json()["data"]["id"]
            for t in ("job.canceled", "key.rolled")
        ]
        listen.line(timeout=20, containing="key.rolled")
        ids = [json.loads(r["body"])["data"]["id"] for r in receiver.received]
        assert ids[-2:] == missed and len(ids) == 4  # none lost, none twice
        assert any("reconnecting" in x for x in listen.err)

        # Revoking the key ends both streams at once; the CLI says why and exits non-zero.
        assert api.delete("/api/key").status_code == 200
        assert listen.wait() == 3 and tail.wait() == 3
        assert any("revoked" in x for x in listen.err), listen.err
    finally:
        listen.stop()
        tail.stop()
        receiver.close()
        api.close()


def test_listen_gets_a_sandbox_delay_jobs_end_when_it_comes(served, developer, levqor):
    """As an endpoint would: the Procfile worker streams it at the job's end, verifiable."""
    base, _ = served
    api = httpx.Client(base_url=base, headers={"x-api-key": developer}, timeout=10)
    receiver = Receiver()
    listen = Cli(levqor, cli_env(developer, base), "listen", "--forward-to", receiver.url(), "--sandbox")
    try:
        secret = listen.line(containing="Ready!").rsplit(" ", 1)[-1]
        job = api.post("/api/sandbox/v1/jobs", json={"workflow": "delay", "input": {"seconds": 2}}).json()
        assert job["status"] == "running"
        line = listen.line(timeout=20, containing="job.succeeded")
        assert "[200]" in line
        assert api.get(f"/api/sandbox/v1/jobs/{job['id']}").json()["status"] == "succeeded"  # not before its end
        [received] = receiver.received
        event = Webhook(secret).verify(received["body"], received["headers"])
        assert (event["type"], event["data"]["id"], event["data"]["result"]) == (
            "job.succeeded",
            job["id"],
            {"slept_seconds": 2},
        )
    finally:
        listen.stop()
        receiver.close()
        api.close()


def test_errors_are_clear_and_ctrl_c_ends_cleanly(served, developer, levqor):
    base, _ = served

    def run(*args, key=developer, at=base):
        return subprocess.run([str(levqor), *args], env=cli_env(key, at), capture_output=True, text=True, timeout=60)

    no_key = run("workflows", key=None)
    assert no_key.returncode == 3 and "LEVQOR_API_KEY" in no_key.stderr
    wrong = run("workflows", key="lvq_" + "0" * 32 + "_AAAAAA")
    assert wrong.returncode == 3 and "refused" in wrong.stderr
    down = run("listen", "--forward-to", "localhost:9/x", at=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 4 and "Could not reach" in down.stderr
    listed = run("workflows", "--json")
    assert listed.returncode == 0 and any(w["id"] == "echo" for w in json.loads(listed.stdout)["data"])
    created = run("jobs", "create", "echo", "--input", '{"message": "hi"}', "--wait", "--sandbox", "--json")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["status"] == "succeeded"
    read = run("jobs", "get", job["id"], "--sandbox")
    assert read.returncode == 0 and job["id"] in read.stdout

    tail = Cli(levqor, cli_env(developer, base), "logs", "tail")
    _wait(lambda: any("Tailing" in x for x in tail.err), "logs tail to be connected")
    tail.proc.send_signal(signal.SIGINT)
    assert tail.wait() == 130
    assert not any("Traceback" in x for x in tail.err), tail.err
