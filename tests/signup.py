"""Developers made over HTTP as a browser makes them, for servers the tests run in another process.

Sign-up mails a confirmation link and signs nobody in. Where the server prints its mail (no
SMTP_HOST, as under `make run`) the link is read from its console log and opened; otherwise the
address is confirmed as an operator would (`flask accounts confirm`)."""

import re
import subprocess
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf-token" content="([^"]+)"')


def csrf(web: httpx.Client, path: str = "/signup") -> str:
    return CSRF.search(web.get(path).text).group(1)


def sign_up(web: httpx.Client, email: str, password: str = PASSWORD) -> None:
    signed_up = web.post("/signup", data={"email": email, "password": password, "csrf_token": csrf(web)})
    assert signed_up.status_code == 302 and signed_up.headers["location"].startswith("/signup/check-email"), (
        signed_up.status_code,
        signed_up.text[:300],
    )


def log_in(web: httpx.Client, email: str, password: str = PASSWORD) -> str:
    """Logs in; returns the CSRF token of the signed-in session."""
    token = csrf(web, "/login")
    logged_in = web.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert logged_in.status_code == 302, (logged_in.status_code, logged_in.text[:300])
    return csrf(web, "/developer")


def confirm_with_cli(env: dict, *emails: str) -> None:
    """`flask accounts confirm`, against the database the server's environment names."""
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "flask"), "accounts", "confirm", *emails],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def confirm_in_database(database_url: str, *emails: str) -> None:
    """What `flask accounts confirm` does, in one SQL statement: for the benches, which make dozens
    of accounts and already set their tiers in SQL."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE accounts SET confirmed_at = now() WHERE email = ANY(%s)", (list(emails),))


def link_from_console(log: Path, email: str, kind: str = "confirm", timeout: float = 15) -> str:
    """The path of the newest `kind` link (confirm, reset) in a mail to `email` printed on the console."""
    pattern = re.compile(rf"To: {re.escape(email)}\n.*?https?://[^/\s]+(/{kind}/[\w.-]+)", re.S)
    deadline = time.monotonic() + timeout
    while True:
        found = pattern.findall(log.read_text(errors="replace")) if log.exists() else []
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no {kind} mail to {email} in {log}"
        time.sleep(0.2)


def developer_with_key(base: str, email: str, confirm, web: httpx.Client | None = None) -> str:
    """Sign up, confirm (`confirm(web, email)`), log in and create a key on the portal; the raw key.
    `web` is the browser-like client to use (kept signed in), else a new one."""
    own = web is None
    web = web or httpx.Client(base_url=base, timeout=30)
    try:
        sign_up(web, email)
        confirm(web, email)
        token = log_in(web, email)
        created = web.post("/api/key/new", json={}, headers={"X-CSRFToken": token})
        assert created.status_code == 201, created.text
        return created.json()["key"]
    finally:
        if own:
            web.close()
