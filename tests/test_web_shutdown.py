"""A web dyno stopped with event streams open (`levqor listen`, `levqor logs tail`) ends them with
an `end` event (`reason`: `restarting`) and exits on its own, well inside the 30 s a platform leaves
between SIGTERM and SIGKILL; each worker shuts down cleanly, and uvicorn has no stream to cut
(levqor_core.web.web_worker)."""

import json
import os
import re
import signal
import subprocess
import threading
import uuid

import httpx
import redis

from levqor_core.metering.flusher import EXIT_WAIT_SECONDS
from levqor_core.web.web_worker import SHUTDOWN_GRACE_SECONDS

from . import helpers as shipped
from . import signup
from .servers import free_port


def hold_stream(base: str, key: str, path: str, seen: dict) -> None:
    """Read a stream until the server ends it; note its first event, its last event's name and
    data, and how the connection ended."""
    try:
        with httpx.stream("GET", base + path, headers={"x-api-key": key}, timeout=httpx.Timeout(10, read=60)) as s:
            for line in s.iter_lines():
                if line.startswith("event: "):
                    seen.setdefault("first", line[7:])
                    seen["last"] = line[7:]
                elif line.startswith("data: "):
                    seen["data"] = json.loads(line[6:])
        seen["end"] = "closed"
    except httpx.HTTPError as err:
        seen["end"] = type(err).__name__


def test_a_stopped_web_dyno_ends_its_open_streams_and_exits_cleanly(postgres_server, redis_server, tmp_path):
    port = free_port()
    redis.Redis.from_url(redis_server.url).flushdb()
    env = shipped.shipped_env(
        postgres_server.create_database(f"stop_{uuid.uuid4().hex[:8]}"), redis_server.url, port, tmp_path
    )
    processes = shipped.procfile()
    release = subprocess.run(
        ["bash", "-c", processes["release"]], cwd=shipped.ROOT, env=env, capture_output=True, text=True
    )
    assert release.returncode == 0, release.stderr[-2000:]
    out = tmp_path / "web.out"
    web = shipped.start_procfile_line(processes["web"], env, output=out.open("w+"))
    base = f"http://127.0.0.1:{port}"
    try:
        shipped.wait_for(lambda: shipped.web_is_up(base), 60, what="the web process answering")
        key = signup.developer_with_key(
            base, "stop@example.com", lambda _web, email: signup.confirm_with_cli(env, email)
        )
        streams = {"/api/sandbox/v1/events/stream": {}, "/api/v1/request_log/stream": {}}
        readers = [
            threading.Thread(target=hold_stream, args=(base, key, p, seen), daemon=True) for p, seen in streams.items()
        ]
        for reader in readers:
            reader.start()
        shipped.wait_for(lambda: all("first" in seen for seen in streams.values()), 15, what="both streams open")

        os.killpg(web.pid, signal.SIGTERM)  # as the platform stops a dyno: every process of it
        web.wait(timeout=25)  # the platform's SIGKILL comes at 30 s
        for reader in readers:
            reader.join(timeout=5)
        # Each was told, and closed cleanly: its client reconnects at once, from its Last-Event-ID.
        for seen in streams.values():
            assert seen.get("end") == "closed" and seen.get("last") == "end", streams
            assert seen["data"]["reason"] == "restarting", streams
    finally:
        shipped.stop_procfile_line(web)
    log = out.read_text()
    # Both workers (WEB_CONCURRENCY=2) finished on their own: none was killed by gunicorn.
    assert len(re.findall(r"Finished server process \[\d+\]", log)) == 2, log[-3000:]
    assert "SIGKILL" not in log
    assert "timeout graceful shutdown exceeded" not in log  # nothing left for uvicorn to cut
    assert SHUTDOWN_GRACE_SECONDS + EXIT_WAIT_SECONDS < 30  # the grace, then the usage flusher's last tick
