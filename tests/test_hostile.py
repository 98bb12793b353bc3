"""Hostile users (issue 11): every rule and limit holds against someone trying to break it.

Each test here reproduces a way in that was found by attacking the app, and proves it is shut.
The first ones run against the Procfile's `web` line for real (gunicorn, two uvicorn workers) on
the suite's PostgreSQL and Redis, where the findings were made.
"""

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from levqor_core.accounts import service as accounts
from levqor_core.web.request_guard import json_depth_exceeds

from . import signup
from .conftest import PASSWORD
from .servers import _wait_port, free_port

ROOT = Path(__file__).resolve().parent.parent


def _procfile_web() -> str:
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    return line.removeprefix("web:").strip()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/api/health", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


@dataclass
class Web:
    url: str
    pid: int  # gunicorn's master

    def worker_pids(self) -> list[int]:
        return [int(x) for x in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]


@pytest.fixture(scope="module")
def web(cx, redis_server, database_url):
    """The Procfile's `web` process (2 workers) on the suite's servers."""
    port = free_port()
    var_dir = tempfile.mkdtemp(prefix="lvq-web-")
    env = {
        **os.environ,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "SECRET_KEY": "test-secret",
        "LEVQOR_VAR_DIR": var_dir,
        "USAGE_FLUSH_SECONDS": "0",
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="lvq-prom-"),
    }
    proc = subprocess.Popen(
        ["bash", "-c", "exec " + _procfile_web()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_port(port, proc, "gunicorn", timeout=60)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _healthy(url):
            assert time.monotonic() < deadline, "the web process did not become healthy"
            time.sleep(0.2)
        yield Web(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class OneConnection:
    """Browser-like sessions (own cookies each) that share one keep-alive connection, so every
    request reaches the same worker process."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.transport = httpx.HTTPTransport(limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))

    def session(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, transport=self.transport, timeout=30)

    def close(self):
        self.transport.close()


def _csrf(client: httpx.Client, path: str = "/signup") -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get(path).text).group(1)


def _sign_up(client: httpx.Client, app) -> str:
    """A confirmed, signed-in developer (the server shares the suite's database); the CSRF token."""
    email = f"hostile-{time.monotonic_ns()}@example.com"
    signup.sign_up(client, email, PASSWORD)
    with app.app_context():
        accounts.confirm(accounts.by_email(email))
    return signup.log_in(client, email, PASSWORD)


# -- 1. the key-creation limit must not fall back to per-process memory --------------------------------


def test_anonymous_calls_on_the_same_process_do_not_reopen_the_daily_key_creation(web, app):
    """An anonymous POST /api/key/new made Flask-Limiter's key function raise; Flask-Limiter then
    took its Redis storage for dead and counted in (empty) process memory, so an account refused a
    second key got it by alternating its attempts with anonymous calls."""
    wire = OneConnection(web.url)
    try:
        owner, stranger = wire.session(), wire.session()
        owner_csrf = _sign_up(owner, app)
        assert owner.post("/api/key/new", json={}, headers={"X-CSRFToken": owner_csrf}).status_code == 201
        stranger_csrf = _csrf(stranger)  # an anonymous session with a valid CSRF token
        statuses = []
        for _ in range(4):
            anonymous = stranger.post("/api/key/new", json={}, headers={"X-CSRFToken": stranger_csrf})
            assert anonymous.status_code == 401, anonymous.text
            assert anonymous.headers["content-type"] == "application/problem+json"
            bogus_cookie = httpx.post(
                web.url + "/api/key/new", json={}, cookies={"session": "not-a-session"}, headers={"X-CSRFToken": "x"}
            )
            assert bogus_cookie.status_code == 403  # refused by the CSRF check
            statuses.append(owner.post("/api/key/new", json={}, headers={"X-CSRFToken": owner_csrf}).status_code)
        assert statuses == [429, 429, 429, 429]
    finally:
        wire.close()


def test_no_limiter_callable_raises_even_when_loading_the_user_fails(app, monkeypatch):
    """Every key, limit, exempt_when and on_breach function Flask-Limiter holds, called for a
    signed-in session whose account cannot be loaded (the database failing): none raises, so
    only Redis itself failing can send Flask-Limiter to its per-process fallback."""
    from flask import session

    from levqor_core.web.limiter import limiter

    def broken_loader(_account_id):
        raise RuntimeError("database unreachable")

    import handlers.billing
    import handlers.keys
    import handlers.usage  # noqa: F401  (Connexion imports handlers on first use)

    monkeypatch.setattr(app.login_manager, "_user_callback", broken_loader)
    limits = {id(lim): lim for group in limiter.limit_manager._decorated_limits.values() for lim in group}.values()
    # Key creation, emergency key replacement, session burst (the API's and the portal's), log-in,
    # sign-up, the secret-attempts limit per address of two-factor codes, recovery codes,
    # re-authentication, password change, account deletion, forgot password, resend confirmation and
    # email change, and their one shared limit per account.
    assert len(limits) == 15
    called = 0
    for lim in limits:
        functions = [lim.key_function, lim.exempt_when, lim.on_breach]
        if callable(lim.limit_provider):
            functions.append(lim.limit_provider)
        for fn in filter(None, functions):
            with app.test_request_context("/api/key/new", method="POST"):
                session["_user_id"] = "1"
                fn(None) if fn is lim.on_breach else fn()
                called += 1
    assert called >= 9


# -- 4. a leaked key does not expose its owner -------------------------------------------------------


def test_a_key_reads_the_audit_trail_without_its_owners_email_addresses_or_user_agents(portal, cx):
    dev = portal().sign_up()
    raw = dev.new_key().json()["key"]
    browser = {"User-Agent": "Mozilla/5.0 (Owner's laptop)"}
    as_owner = dev.client.get("/api/key/events", headers=browser).json()["data"]
    assert as_owner[0]["actor"] == dev.email and as_owner[0]["ip"] and as_owner[0]["user_agent"]

    leaked = cx.test_client().get("/api/key/events", headers={"x-api-key": raw})
    assert leaked.status_code == 200
    events = leaked.json()["data"]
    assert [(e["event"], e["actor"], e["ip"], e["user_agent"]) for e in events] == [("created", "portal", None, None)]
    assert dev.email not in leaked.text and as_owner[0]["user_agent"] not in leaked.text


# -- 5. a key in its grace period manages nothing ------------------------------------------------------


def test_a_rolled_key_in_its_grace_period_cannot_revoke_its_replacement(app, client, make_account):
    from datetime import timedelta

    from levqor_core.accounts.models import Account
    from levqor_core.extensions import db
    from levqor_core.keys import service as keys

    account_id, old = make_account()
    with app.app_context():
        new = keys.issue(db.session.get(Account, account_id), keys.Actor(email="t"), grace=timedelta(hours=1)).raw
    refused = client.delete("/api/key", headers={"x-api-key": old})
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/expiring-key-cannot-manage")
    for raw in (new, old):  # nothing changed: both still work through the grace period
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
    assert client.get("/api/key", headers={"x-api-key": new}).json()["status"] == "active"

    revoked = client.delete("/api/key", headers={"x-api-key": new})  # the active key still can
    assert revoked.status_code == 200
    assert client.get("/api/v1/workflows", headers={"x-api-key": old}).status_code == 401


# -- 2. deep nesting is a 400, checked before the body is parsed or the call counted ---------------------


def _nested(depth: int) -> bytes:
    inner = b"1"
    for _ in range(depth - 1):
        inner = b'{"a":' + inner + b"}"
    return b'{"workflow":"echo","input":' + inner + b"}"


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/sandbox/v1/jobs"])
def test_a_deeply_nested_body_is_a_400_that_spends_no_quota(client, make_account, path):
    _, key = make_account(tier="pro")
    headers = {"x-api-key": key, "Content-Type": "application/json"}
    before = client.get("/api/usage", headers={"x-api-key": key}).json()
    bodies = [_nested(33), _nested(3000), b'{"workflow":"echo","input":{"a":' + b"[" * 60_000]
    for body in bodies:
        refused = client.post(path, content=body, headers=headers)
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/nesting-too-deep")
        assert "32" in refused.json()["detail"]
    after = client.get("/api/usage", headers={"x-api-key": key}).json()
    assert after["calls_used"] == before["calls_used"]
    assert after["sandbox"]["calls_today"] == before["sandbox"]["calls_today"]

    # The limit itself is fine (the body's object plus 31 levels inside it), and brackets inside
    # strings (after escaped quotes and backslashes too) are text, not nesting.
    assert client.post(path, content=_nested(32), headers=headers).status_code == 202
    stringy = json.dumps({"workflow": "echo", "input": {"s": '[[[{{{\\"\\' * 400}})  # under the sandbox's 8 KiB input
    assert client.post(path, content=stringy, headers=headers).status_code == 202


def test_the_nesting_scan_reads_strings_and_escapes_like_a_json_parser():
    assert not json_depth_exceeds(json.dumps([[["x"]]]).encode(), 3)
    assert json_depth_exceeds(json.dumps([[[["x"]]]]).encode(), 3)
    for text in ("[[[[", '\\"[[[[', '"\\', "\\" * 5 + '"[[[['):
        assert not json_depth_exceeds(json.dumps({"s": text, "t": [[text]]}).encode(), 3), text


# -- 8. one API reference: /docs/api ----------------------------------------------------------------------


def test_connexions_bundled_swagger_ui_is_not_served(client):
    for path in ("/api/ui/", "/api/ui", "/api/ui/swagger-ui-bundle.js", "/api/ui/swagger-initializer.js"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "swagger" not in response.text.lower()
    assert client.get("/api/openapi.json").status_code == 200  # the spec itself still is
    assert client.get("/docs/api").status_code == 200


# -- 6. guessing keys is throttled per client address --------------------------------------------------


def test_guessing_keys_is_throttled_per_address_without_database_lookups(cx, app, make_account):
    import sqlalchemy as sa
    from starlette.testclient import TestClient

    from levqor_core.extensions import db
    from levqor_core.keys import format as key_format
    from levqor_core.limits import refusals

    _, valid = make_account()
    guesser = TestClient(cx, client=("203.0.113.66", 40000))
    neighbour = TestClient(cx, client=("198.51.100.7", 40000))
    assert guesser.get("/api/v1/workflows", headers={"x-api-key": valid}).status_code == 200  # cached now
    lookups = []

    def count_lookups(conn, cursor, statement, *_):
        if "FROM api_keys" in statement:
            lookups.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count_lookups)
    try:
        statuses = []
        for _ in range(60):  # made-up keys with a valid checksum, as in the finding
            response = guesser.get("/api/v1/workflows", headers={"x-api-key": key_format.generate()})
            statuses.append(response.status_code)
            if response.status_code == 429:
                throttled = response
    finally:
        sa.event.remove(engine, "before_cursor_execute", count_lookups)
    limit = refusals.FAILED_AUTH_PER_MINUTE
    if 401 in statuses[limit:]:  # a minute boundary passed mid-run: the window restarted once
        assert statuses.count(401) <= 2 * limit
    else:
        assert statuses == [401] * limit + [429] * (60 - limit)
    assert len(lookups) == statuses.count(401)  # a refused guess costs no database lookup

    assert throttled.headers["content-type"] == "application/problem+json"
    assert throttled.json()["type"].endswith("/too-many-failed-authentications")
    assert throttled.headers["X-RateLimit-Limit"] == str(limit)
    assert throttled.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.headers["RateLimit-Policy"] == f'"failed-auth";q={limit};w=60'

    # The throttle is the guesser's alone, and it never stops a valid key.
    assert guesser.get("/api/v1/workflows", headers={"x-api-key": valid}).status_code == 200
    assert neighbour.get("/api/v1/workflows", headers={"x-api-key": key_format.generate()}).status_code == 401


def test_an_ipv6_guesser_is_counted_by_its_64_prefix():
    from levqor_core.limits.gate import client_bucket

    assert client_bucket("2001:db8:1:2::1") == client_bucket("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert client_bucket("2001:db8:1:3::1") != client_bucket("2001:db8:1:2::1")
    assert client_bucket("::ffff:203.0.113.9") == client_bucket("203.0.113.9") == "203.0.113.9"
    assert client_bucket(None) is None


def test_guessing_is_throttled_during_a_redis_outage_too(cx, make_account, outage):
    from starlette.testclient import TestClient

    from levqor_core.keys import format as key_format
    from levqor_core.limits import refusals

    _, valid = make_account()
    guesser = TestClient(cx, client=("203.0.113.67", 40000))
    outage()
    # (a key checked in the outage is cached per process for a few seconds, as in Redis for longer)
    assert guesser.get("/api/v1/workflows", headers={"x-api-key": valid}).status_code == 200
    statuses = [
        guesser.get("/api/v1/workflows", headers={"x-api-key": key_format.generate()}).status_code
        for _ in range(refusals.FAILED_AUTH_PER_MINUTE + 5)
    ]
    assert statuses.count(429) >= 4 and set(statuses) == {401, 429}, statuses
    assert guesser.get("/api/v1/workflows", headers={"x-api-key": valid}).status_code == 200


# -- 3. failed log-ins cannot exhaust a web process's memory ---------------------------------------------


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1))


def test_ten_concurrent_failed_log_ins_queue_instead_of_piling_up_memory(web):
    """The per-address log-in limit (10 a minute) lets 10 run at once; with argon2-cffi's default
    parameters (64 MiB per hash) they raised the workers' peak memory by ~520 MiB."""
    from concurrent.futures import ThreadPoolExecutor

    def failed_log_in(address: str) -> int:
        with httpx.Client(base_url=web.url, timeout=60) as browser:
            token = _csrf(browser, "/login")
            return browser.post(
                "/login",
                data={"email": "nobody@example.com", "password": "wrong password", "csrf_token": token},
                headers={"X-Forwarded-For": address},  # from loopback, a trusted proxy
            ).status_code

    for _ in range(6):  # warm up both workers' log-in path from another address
        assert failed_log_in("192.0.2.10") == 401
    workers = web.worker_pids()
    before = sum(_peak_rss_kib(pid) for pid in workers)
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(failed_log_in, ["192.0.2.11"] * 10))
    grown_mib = (sum(_peak_rss_kib(pid) for pid in workers) - before) / 1024
    assert statuses == [401] * 10
    # At most 2 hashes of 19 MiB at a time in each of the 2 workers, and some slack.
    assert grown_mib < 100, f"peak memory of the web workers grew by {grown_mib:.0f} MiB"


def test_a_hash_made_with_the_old_parameters_still_logs_in_and_is_rehashed(app, production_hashing_cx):
    import sqlalchemy as sa
    from argon2 import PasswordHasher

    from levqor_core.accounts.models import Account
    from levqor_core.extensions import db

    from .conftest import csrf_from

    old = PasswordHasher()  # argon2-cffi's default: what accounts were created with before
    assert (old.memory_cost, old.time_cost, old.parallelism) == (65536, 3, 4)
    with app.app_context():
        db.session.add(Account(email="early@example.com", password_hash=old.hash(PASSWORD), tier="sandbox"))
        db.session.commit()
    browser = production_hashing_cx.test_client(follow_redirects=False)
    token = csrf_from(browser.get("/login").text)
    logged_in = browser.post("/login", data={"email": "early@example.com", "password": PASSWORD, "csrf_token": token})
    assert logged_in.status_code == 302
    with app.app_context():
        stored = db.session.scalar(sa.select(Account.password_hash).where(Account.email == "early@example.com"))
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


# -- 9. smaller hardening --------------------------------------------------------------------------------


def test_api_responses_carry_nosniff_errors_included(client, make_account):
    _, key = make_account()
    responses = [
        client.get("/api/health"),
        client.get("/api/v1/workflows", headers={"x-api-key": key}),
        client.get("/api/v1/workflows", headers={"x-api-key": "lvq_made_up"}),  # 401 from Connexion
        client.get("/api/v1/nothing-here"),  # 404 from the router
        client.post("/api/v1/jobs", headers={"x-api-key": key, "Content-Length": "99999999"}),  # 413 at the edge
        client.post("/api/v1/jobs", headers={"x-api-key": key}, content=_nested(40)),  # 400 at the edge
        client.get("/developer"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 401, 404, 413, 400, 200]
    for response in responses:
        assert response.headers.get_list("X-Content-Type-Options") == ["nosniff"], response.url


def test_hsts_on_https_requests_only(cx):
    from starlette.testclient import TestClient

    over_https = TestClient(cx, base_url="https://portal.example")
    for path in ("/api/health", "/developer", "/api/v1/workflows"):
        hsts = over_https.get(path).headers.get("Strict-Transport-Security")
        assert hsts == "max-age=31536000; includeSubDomains", path
    assert "Strict-Transport-Security" not in TestClient(cx).get("/api/health").headers


def test_code_samples_name_the_public_host_not_the_requests(app, portal):
    dev = portal().sign_up()
    public = app.config["PUBLIC_BASE_URL"]
    # The signed-in Overview shows no samples; the visitors' /developer does.
    for client, path in (
        (dev.client, "/docs/api"),
        (dev.client, "/docs/sdk"),
        (dev.client, "/docs/getting-started"),
        (portal().client, "/developer"),
    ):
        html = client.get(path, headers={"Host": "evil.example"}).text
        assert "evil.example" not in html, path
        assert public in html, path


def test_public_base_url_is_pinned_by_the_environment(monkeypatch):
    from levqor_core import config

    for name in ("PUBLIC_BASE_URL", "DYNO", "PORT"):
        monkeypatch.delenv(name, raising=False)
    assert config._public_base_url({}) == "http://127.0.0.1:5000"
    assert config._public_base_url({"PORT": "8123"}) == "http://127.0.0.1:8123"
    assert config._public_base_url({"DYNO": "web.1"}) == config.PRODUCTION_BASE_URL
    assert (
        config._public_base_url({"DYNO": "web.1", "PUBLIC_BASE_URL": "https://dev.example/"}) == "https://dev.example"
    )


def test_only_herokus_router_network_may_set_the_client_address_by_default(cx, app, make_account, monkeypatch):
    """A peer on another private network (a VPN, a container network) was trusted like the router."""
    import runpy

    import sqlalchemy as sa
    from starlette.testclient import TestClient
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from levqor_core.extensions import db
    from levqor_core.keys.models import KeyEvent

    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    trusted = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["forwarded_allow_ips"]

    def revoked_from(peer: str) -> str:
        _, raw = make_account()
        proxied = TestClient(ProxyHeadersMiddleware(cx, trusted_hosts=trusted), client=(peer, 40000))
        spoofed = {"x-api-key": raw, "X-Forwarded-For": "6.6.6.6"}
        assert proxied.delete("/api/key", headers=spoofed).status_code == 200
        with app.app_context():
            return db.session.scalars(sa.select(KeyEvent.ip).order_by(KeyEvent.id.desc())).first()

    assert revoked_from("10.12.0.7") == "6.6.6.6"  # Heroku's router: its header is believed
    for peer in ("192.168.1.5", "172.17.0.3", "100.64.3.2"):
        assert revoked_from(peer) == peer

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "172.17.0.0/16")  # another deployment's own proxy
    trusted = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["forwarded_allow_ips"]
    assert revoked_from("172.17.0.3") == "6.6.6.6"
