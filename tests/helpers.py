"""What several test modules need, in one place (test modules never import each other): the
spec, the worker run as shipped, the Procfile's lines, usage seeded as if already flushed, an
authenticator enrolled for two-factor sign-in."""

import asyncio
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import httpx
import pyotp
import sqlalchemy as sa
import yaml

from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering.models import UsageDaily

from . import servers

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "openapi" / "openapi.yaml"
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "RateLimit-Policy", "RateLimit")


@cache
def load_spec() -> dict:
    """openapi/openapi.yaml, parsed once per test process (read it, never change it)."""
    return yaml.safe_load(SPEC_PATH.read_text())


def worker_env(database_url: str, redis_url: str, **settings: str) -> dict:
    """The environment of a worker process on the suite's PostgreSQL and Redis."""
    return os.environ | {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING"} | settings


def run_worker_burst(env: dict) -> subprocess.CompletedProcess:
    """The real worker process (`python -m jobs.worker --burst`), until its queues are empty."""
    done = subprocess.run(
        [sys.executable, "-m", "jobs.worker", "--burst"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def procfile() -> dict[str, str]:
    """The Procfile's process types and their command lines."""
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def start_procfile_line(command: str, env: dict, output=None) -> subprocess.Popen:
    """A Procfile line as the platform runs it: through a shell, in its own process group
    (`output`: a file for its stdout and stderr)."""
    return subprocess.Popen(
        ["bash", "-c", command], cwd=ROOT, env=env, start_new_session=True, stdout=output, stderr=output
    )


def shipped_env(database_url: str, redis_url: str, port: int, var_dir) -> dict:
    """The environment a Procfile process gets on the platform, pointed at these servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COV"))} | {
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "SECRET_KEY": "procfile-test",
        "LEVQOR_VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
    }


def stop_procfile_line(process: subprocess.Popen) -> None:
    """SIGTERM to the line's process group, as the platform stops a dyno; SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate, timeout: float, step: float = 0.25, what: str = "condition"):
    value = servers.wait_for(predicate, timeout, step)
    assert value, f"{what} not reached within {timeout}s"
    return value


def web_is_up(base: str) -> bool:
    try:
        return httpx.get(base + "/api/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def seed_usage(app, account_id: int, calls: int = 0, sandbox_calls: int = 0) -> None:
    """Usage already persisted for today, as if earlier calls had been flushed."""
    with app.app_context():
        key_id = db.session.scalar(sa.select(ApiKey.id).where(ApiKey.account_id == account_id))
        db.session.add(
            UsageDaily(key_id=key_id, account_id=account_id, day=date.today(), calls=calls, sandbox_calls=sandbox_calls)
        )
        db.session.commit()


def run_on_own_loop(coroutine):
    """asyncio.run on a thread of its own: the browser tests' session-wide Playwright keeps a loop
    marked running in the main thread, where asyncio.run refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def fresh_code(totp: pyotp.TOTP) -> str:
    """The authenticator's code for a time step whose codes were not used yet (a code works once):
    this step's, else a later one's, which the server accepts within its validity (2 minutes)."""
    step = max(int(time.time()) // totp.interval, getattr(totp, "last_step", -1) + 1)
    totp.last_step = step
    return totp.at(step * totp.interval)


def enrol_authenticator(client) -> pyotp.TOTP:
    """Two-factor sign-in turned on for the signed-in (and freshly logged-in) session of `client`,
    as a developer does it on /developer/account/two-factor; the authenticator app's TOTP."""
    csrf = re.compile(r'name="csrf-token" content="([^"]+)"')
    page = client.get("/developer/account/two-factor").text
    chosen = client.post(
        "/developer/account/two-factor", data={"setup": "authenticator", "csrf_token": csrf.search(page).group(1)}
    )
    assert chosen.status_code == 200, chosen.text[:500]
    shown = re.search(r'id="totp-key">([A-Z2-7]{4}(?:-[A-Z2-7]{4})+)<', chosen.text).group(1)  # for manual entry
    totp = pyotp.TOTP(shown.replace("-", ""))
    action = re.search(r'<form action="([^"]+)" method="post" name="two_factor_verify_code_form"', chosen.text)
    done = client.post(
        action.group(1), data={"code": fresh_code(totp), "csrf_token": csrf.search(chosen.text).group(1)}
    )
    assert done.status_code == 302, done.text[:500]
    return totp


def recovery_codes(client) -> list[str]:
    """A fresh set of two-factor recovery codes, as /developer/account/recovery-codes shows them once."""
    csrf = re.compile(r'name="csrf-token" content="([^"]+)"')
    page = client.get("/developer/account/recovery-codes").text
    shown = client.post("/developer/account/recovery-codes", data={"csrf_token": csrf.search(page).group(1)})
    assert shown.status_code == 200
    return re.findall(r"<li><code>([^<]+)</code></li>", shown.text)


def app_on_sqlite(path, redis_server, **settings):
    """An app of its own on a SQLite file (the embedded default), e.g. to run the migrations up to a
    revision and on."""
    from levqor_core.app import create_app

    return create_app(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
            "REDIS_URL": redis_server.url,
            "RATELIMIT_STORAGE_URI": redis_server.url,  # Flask-Limiter's one instance: keep its storage
            "SECRET_KEY": "sqlite-secret",
            **settings,
        }
    ).app


def age_log_in(app, client, by: timedelta) -> None:
    """The signed-in session of `client` as it is `by` later: its signed cookie rewritten with the
    time of its last full log-in (and of any freshness grace) moved back, which is all the passing
    time changes in it. Flask-Security-Too's freshness checks read those times from the session."""
    name = app.config["SESSION_COOKIE_NAME"]
    serializer = app.session_interface.get_signing_serializer(app)
    (cookie,) = [c for c in client.cookies.jar if c.name == name]
    session = serializer.loads(cookie.value)
    session["fs_paa"] -= by.total_seconds()
    if "fs_gexp" in session:
        session["fs_gexp"] -= int(by.total_seconds())
    cookie.value = serializer.dumps(session)
