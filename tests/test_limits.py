"""Tiered limits: monthly quotas, burst limits, the sandbox cap, headers, exactness, cost."""

import asyncio
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
import redis
import yaml
from connexion.json_schema import Draft4ResponseValidator
from sqlalchemy import event

from levqor_core import problems, redis_conn, redis_scripts, tiers
from levqor_core.accounts.models import Account
from levqor_core.app import SPEC
from levqor_core.extensions import db
from levqor_core.limits import gate as gate_module
from levqor_core.metering import counters as metering
from levqor_core.web import validation

from . import both_backends
from .helpers import RATE_HEADERS, seed_usage
from .servers import served_in_thread

cx, app = both_backends.fixtures()  # every test on one Redis and on a Redis Cluster


def spaced(start: float):
    """Timestamps one second apart, so the per-second burst limit stays out of the way."""
    return (start + i for i in range(10**6))


def quiet_start(span: int) -> float:
    """A start for `span` one-second stamps away from this second's burst counter and inside
    today's UTC day (and so this month): counters are per day and per month of the stamp, and
    the test's seeded usage and its checks read today's. Just after midnight, that is ahead."""
    now = time.time()
    day_start = now - now % 86400
    return now - 3600 if now - 3600 - span >= day_start else now + 60


@pytest.fixture
def admit(app):
    """Admits one call at a chosen time through the gate's async door, the one every API call
    takes in production, on one event loop for the whole test as in a server process. The loop
    runs in a thread of its own: the browser tests' session-wide Playwright keeps a loop marked
    running in the main thread, where another loop cannot run."""
    gate = app.extensions["levqor.gate"]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield lambda key, area, now=None: asyncio.run_coroutine_threadsafe(
            gate.authorize_async(key, area, now=now), loop
        ).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("tier", ["sandbox", "pro"])
def test_monthly_quota_admits_exactly_what_is_left_then_refuses(client, app, make_account, tier):
    quota = tiers.get(tier).monthly_quota
    account_id, key = make_account(tier=tier)
    seed_usage(app, account_id, calls=quota - 3)
    headers = {"x-api-key": key}
    statuses = []
    for _ in range(3):
        ok = client.get("/api/v1/workflows", headers=headers)
        statuses.append(ok.status_code)
    assert statuses == [200, 200, 200]
    assert ok.headers["X-RateLimit-Limit"] == str(quota) and ok.headers["X-RateLimit-Remaining"] == "0"
    refused = client.get("/api/v1/workflows", headers=headers)
    assert refused.status_code == 429
    assert refused.json()["type"] == problems.TYPE_BASE + "monthly-quota-exceeded"
    reset = metering.calendar_period(datetime.now(UTC)).end.timestamp()
    assert abs(int(refused.headers["Retry-After"]) - (reset - time.time())) < 5
    assert refused.headers["X-RateLimit-Reset"] == str(int(reset))
    assert client.get("/api/usage", headers=headers).json()["calls_used"] == quota  # refusals not counted
    assert client.get("/api/sandbox/v1/workflows", headers=headers).status_code == 200  # separate cap


def test_a_served_app_refuses_the_call_past_the_quota_over_a_real_socket(cx, app, make_account):
    """End to end as shipped: uvicorn, the middleware, Connexion's security check, the gate."""
    account_id, key = make_account(tier="sandbox")
    quota = tiers.get("sandbox").monthly_quota
    seed_usage(app, account_id, calls=quota - 1)
    with served_in_thread(cx) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        last = http.get("/api/v1/workflows", headers={"x-api-key": key})
        refused = http.get("/api/v1/workflows", headers={"x-api-key": key})
    assert last.status_code == 200 and last.headers["X-RateLimit-Remaining"] == "0"
    assert refused.status_code == 429 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == problems.TYPE_BASE + "monthly-quota-exceeded"
    assert refused.headers["X-RateLimit-Limit"] == str(quota) and int(refused.headers["Retry-After"]) > 0
    assert refused.headers["RateLimit"].startswith('"monthly";r=0;')


def test_enterprise_quota_is_unlimited(client, app, make_account):
    account_id, key = make_account(tier="enterprise")
    seed_usage(app, account_id, calls=5_000_000)
    response = client.get("/api/v1/workflows", headers={"x-api-key": key})
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == str(tiers.get("enterprise").burst_per_second)
    usage = client.get("/api/usage", headers={"x-api-key": key}).json()
    assert usage["quota"] is None and usage["remaining"] is None and usage["calls_used"] == 5_000_001


@pytest.mark.parametrize("tier", ["sandbox", "pro", "enterprise"])
def test_burst_limit_per_second_per_tier(admit, make_account, tier):
    _, key = make_account(tier=tier)
    burst = tiers.get(tier).burst_per_second
    now = float(int(time.time())) + 0.1
    admitted = 0
    for _ in range(burst + 5):
        try:
            admit(key, "v1", now=now)
            admitted += 1
        except problems.BurstLimitExceeded as refused:
            assert refused.headers["Retry-After"] == "1"
    assert admitted == burst
    admit(key, "v1", now=now + 1)  # the next second is open again


def test_burst_refusal_over_http_has_type_and_headers(client, make_account):
    _, key = make_account(tier="sandbox")
    for _ in range(60):
        response = client.get("/api/v1/workflows", headers={"x-api-key": key})
        if response.status_code == 429:
            break
    assert response.status_code == 429
    assert response.json()["type"] == problems.TYPE_BASE + "burst-limit-exceeded"
    assert response.headers["Retry-After"] == "1"
    assert all(h in response.headers for h in RATE_HEADERS)
    # The headers describe the limit that refused, not the monthly quota.
    burst = tiers.get("sandbox").burst_per_second
    assert (response.headers["X-RateLimit-Limit"], response.headers["X-RateLimit-Remaining"]) == (str(burst), "0")
    assert response.headers["RateLimit-Policy"] == f'"burst";q={burst};w=1'
    assert response.headers["RateLimit"] == '"burst";r=0;t=1'


def test_sandbox_cap_is_100_per_key_per_day_whatever_the_tier(admit, client, make_account):
    account_id, key = make_account(tier="enterprise")
    times = spaced(quiet_start(tiers.SANDBOX_DAILY_LIMIT + 1))
    for _ in range(tiers.SANDBOX_DAILY_LIMIT):
        admit(key, "sandbox", now=next(times))
    with pytest.raises(problems.SandboxDailyCapExceeded) as refused:
        admit(key, "sandbox", now=next(times))
    tomorrow = metering.day_end(datetime.now(UTC).date()).timestamp()
    assert refused.value.headers["X-RateLimit-Reset"] == str(int(tomorrow))
    response = client.get("/api/sandbox/v1/workflows", headers={"x-api-key": key})
    assert response.status_code == 429
    assert response.json()["type"] == problems.TYPE_BASE + "sandbox-daily-cap-exceeded"
    assert response.headers["X-RateLimit-Limit"] == "100" and response.headers["X-RateLimit-Remaining"] == "0"
    usage = client.get("/api/usage", headers={"x-api-key": key}).json()
    assert usage["sandbox"]["calls_today"] == 100 and usage["calls_used"] == 0
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200


def test_every_api_response_carries_rate_limit_headers(client, make_account):
    _, key = make_account(tier="pro")
    headers = {"x-api-key": key}
    responses = [
        client.get("/api/v1/workflows", headers=headers),
        client.get("/api/v1/jobs/job_00000000000000000000", headers=headers),  # 404 from the handler
        client.post("/api/v1/jobs", headers=headers, json={"workflow": "echo"}),  # 400 from validation
        client.get("/api/sandbox/v1/workflows", headers=headers),
        client.get("/api/usage", headers=headers),
    ]
    assert [r.status_code for r in responses] == [200, 404, 400, 200, 200]
    for response in responses:
        assert all(h in response.headers for h in RATE_HEADERS), response.headers
    assert responses[0].headers["RateLimit-Policy"] == '"monthly";q=10000;w=2592000, "burst";q=50;w=1'
    assert responses[3].headers["RateLimit-Policy"].startswith('"daily";q=100;w=86400')


def test_tier_change_applies_to_the_next_call(client, app, make_account):
    from levqor_core.accounts import service as accounts

    account_id, key = make_account(tier="sandbox")
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).headers["X-RateLimit-Limit"] == "1000"
    with app.app_context():
        accounts.set_tier(db.session.get(Account, account_id), "PRO")
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).headers["X-RateLimit-Limit"] == "10000"


def test_cli_set_tier(app, make_account):
    account_id, _ = make_account()
    with app.app_context():
        email = db.session.get(Account, account_id).email
    runner = app.test_cli_runner()
    result = runner.invoke(args=["accounts", "set-tier", email, "Enterprise"])
    assert result.exit_code == 0, result.output
    assert "Enterprise" in result.output
    bad = runner.invoke(args=["accounts", "set-tier", email, "platinum"])
    assert bad.exit_code != 0 and "Unknown tier" in bad.output
    with app.app_context():
        assert db.session.get(Account, account_id).tier == "enterprise"


# -- exactness under concurrency ---------------------------------------------------------------


def _hammer(args):
    """In a separate process: one gate call per timestamp through the async door, against the
    real Redis (or Cluster), all at once on the process's one pipelined connection."""
    redis_url, key, area, stamps = args
    cluster = redis_conn.is_cluster(redis_url)
    gate = gate_module.Gate(  # record already cached: no app needed
        app=None,
        r=redis_conn.client(redis_url, cluster=cluster),
        flush_seconds=0,
        async_client_factory=lambda: redis_conn.script_client(redis_url, cluster=cluster),
    )

    async def call(stamp) -> int:
        try:
            await gate.authorize_async(key, area, now=stamp)
            return 1
        except problems.TooManyRequests:
            return 0

    async def calls():
        return sum(await asyncio.gather(*(call(stamp) for stamp in stamps)))

    return asyncio.run(calls())


@pytest.mark.parametrize("area", ["v1", "sandbox"])
def test_concurrent_calls_from_several_processes_admit_exactly_what_is_left(app, admit, client, make_account, area):
    account_id, key = make_account(tier="sandbox")
    left = 37
    if area == "v1":
        seed_usage(app, account_id, calls=1000 - left)
    else:
        seed_usage(app, account_id, sandbox_calls=100 - left)
    admit(key, "meta")  # cache the key record (and seed counters)
    base = quiet_start(160)
    # 4 processes x 40 calls = 160 > 37, every call in its own second so only the quota decides.
    chunks = [[base + p * 40 + i for i in range(40)] for p in range(4)]
    with ProcessPoolExecutor(max_workers=4) as pool:
        limits_url = app.config["LIMITS_REDIS_URL"]
        admitted = sum(pool.map(_hammer, [(limits_url, key, area, chunk) for chunk in chunks]))
    assert admitted == left
    usage = client.get("/api/usage", headers={"x-api-key": key}).json()
    if area == "v1":
        assert usage["calls_used"] == 1000
    else:
        assert usage["sandbox"]["calls_today"] == 100


def test_concurrent_http_calls_count_every_admitted_call_once(cx, app, make_account):
    from concurrent.futures import ThreadPoolExecutor

    _, key = make_account(tier="enterprise")
    client = cx.test_client()
    # Connexion builds its middleware stack on the first call, without a lock: two first calls at
    # once would both build it (a server's one event loop never does that; these threads would).
    assert client.get("/api/health").status_code == 200
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(
            pool.map(lambda _: client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code, range(120))
        )
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert client.get("/api/usage", headers={"x-api-key": key}).json()["calls_used"] == admitted


# -- cost of the hot path -----------------------------------------------------------------------


class CountingConnection(redis.Connection):
    sent = 0

    def send_packed_command(self, command, check_health=True):
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


class CountingScriptClient(redis_scripts.ScriptClient):
    """The gate's client on the event loop: one write is one round trip."""

    async def _write(self, connection, packed):
        CountingConnection.sent += 1
        return await super()._write(connection, packed)


@pytest.fixture
def counted(app, redis_server, monkeypatch, single_redis):
    """Swap in a gate whose Redis clients count round trips, and count SQL statements."""
    where = {"host": "127.0.0.1", "port": redis_server.port}
    pool = redis.ConnectionPool(connection_class=CountingConnection, **where)

    def counting_async_client():
        return CountingScriptClient(redis_server.url)

    counting_gate = gate_module.Gate(
        app, redis.Redis(connection_pool=pool), flush_seconds=0, async_client_factory=counting_async_client
    )
    monkeypatch.setitem(app.extensions, "levqor.gate", counting_gate)
    statements = []
    with app.app_context():
        engine = db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    yield statements
    event.remove(engine, "before_cursor_execute", listener)


def test_authorised_request_costs_one_redis_round_trip_and_no_sql_once_cached(cx, make_account, counted):
    _, key = make_account(tier="enterprise")
    with cx.test_client() as client:  # one event loop throughout, as in a server process
        client.get("/api/v1/workflows", headers={"x-api-key": key})  # caches the key record, opens the connection
        CountingConnection.sent = 0
        counted.clear()
        for _ in range(5):
            assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    assert CountingConnection.sent == 5
    assert counted == []


def test_a_call_with_no_cookie_or_token_is_anonymous_without_running_the_user_loaders(
    app, client, make_account, monkeypatch
):
    """Flask-Principal would load the user before every call; with nothing to load it from, the
    anonymous user is set up front (levqor_core.web.sessions) and no loader runs."""
    _, key = make_account(tier="enterprise")
    loaded = []
    original = app.login_manager._request_callback

    def counting_loader(request):
        loaded.append(request.path)
        return original(request)

    monkeypatch.setattr(app.login_manager, "_request_callback", counting_loader)
    for response in (client.get("/api/health"), client.get("/api/v1/workflows", headers={"x-api-key": key})):
        assert response.status_code == 200
        assert "Cookie" in response.headers["Vary"]  # as when Flask-Login reads the (empty) session
    # Flask-Security-Too's tokens sign nobody in (tests/test_accounts.py), so they change nothing.
    assert client.get("/api/health", headers={"Authentication-Token": "not-a-token"}).status_code == 200
    assert client.get("/login?auth_token=not-a-token").status_code == 200
    assert loaded == []


def test_revocation_is_seen_at_once_by_a_gate_with_a_warm_cache(app, client, portal, counted):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    assert dev.client.delete("/api/key", headers={"X-CSRFToken": dev.csrf}).status_code == 200
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 401


# -- response validation ------------------------------------------------------------------------


def test_compiled_response_validator_agrees_with_connexion():
    """The fast validator must accept and reject exactly what Connexion's own one does."""
    spec = yaml.safe_load(SPEC.read_text())
    job_schema = {"$ref": "#/components/schemas/Job", "components": spec["components"]}
    good = {
        "id": "job_0a1b2c3d4e5f60718293",
        "workflow": "echo",
        "status": "succeeded",
        "input": {},
        "result": None,
        "error": None,
        "created_at": "2026-11-25T10:00:00+00:00",
        "started_at": None,
        "finished_at": None,
    }
    samples = [
        good,
        good | {"status": "exploded"},
        good | {"error": {"type": "X"}},  # an error without its required message
        good | {"error": {"type": "X", "message": "boom"}},
        {k: v for k, v in good.items() if k != "id"},
        good | {"started_at": 5},
    ]
    reference = Draft4ResponseValidator(job_schema)
    fast = validation.compiled(job_schema)
    assert [fast.is_valid(s) for s in samples] == [reference.is_valid(s) for s in samples]
    assert [fast.is_valid(s) for s in samples] == [True, False, False, True, False, False]


def test_portal_session_calls_to_the_api_have_the_tiers_burst_limit_and_its_headers(portal):
    dev = portal().sign_up()
    burst = tiers.get("sandbox").burst_per_second
    first = dev.client.get("/api/usage")
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == str(burst)
    assert first.headers["RateLimit-Policy"] == f'"burst";q={burst};w=1'
    assert first.headers["RateLimit"].startswith('"burst";r=')
    assert "Retry-After" not in first.headers  # only refusals say when to come back

    # One budget per account across operations: a call to another operation spends the same one.
    for _ in range(5):
        before = int(dev.client.get("/api/usage").headers["X-RateLimit-Remaining"])
        after = int(dev.client.get("/api/key/events").headers["X-RateLimit-Remaining"])
        if after == before - 1:
            break  # else a new second began between the two calls: try again
    assert after == before - 1

    for _ in range(burst * 6):
        response = dev.client.get("/api/key/events")
        if response.status_code == 429:
            break
    assert response.status_code == 429
    assert response.json()["type"] == problems.TYPE_BASE + "burst-limit-exceeded"
    assert response.headers["X-RateLimit-Remaining"] == "0" and int(response.headers["Retry-After"]) <= 1
    assert response.headers["RateLimit"].startswith('"burst";r=0;')


def test_key_creation_headers_name_the_daily_limit_and_only_a_refusal_has_retry_after(portal):
    dev = portal().sign_up()
    created = dev.new_key()
    assert created.status_code == 201 and "Retry-After" not in created.headers
    assert created.headers["RateLimit-Policy"] == f'"daily";q={tiers.KEY_CREATIONS_PER_DAY};w=86400'
    refused = dev.new_key()
    assert refused.status_code == 429 and refused.json()["type"].endswith("/key-creation-limited")
    assert refused.headers["RateLimit"].startswith('"daily";r=0;') and int(refused.headers["Retry-After"]) > 0


def test_the_limit_a_call_counts_against_is_its_operations_area_in_the_spec(client, app, make_account, monkeypatch):
    _, key = make_account(tier="sandbox")
    headers = {"x-api-key": key}
    metered = client.get("/api/v1/workflows", headers=headers)
    assert metered.headers["X-RateLimit-Limit"] == "1000"  # v1: the monthly quota
    # Were the operation declared without an area, its calls would count against neither limit.
    areas = app.extensions["levqor.operation_areas"]
    for routed_as in [name for name in areas if name.rpartition(".")[2] == "list_workflows"]:
        monkeypatch.setitem(areas, routed_as, "meta")
    unmetered = client.get("/api/v1/workflows", headers=headers)
    assert unmetered.headers["X-RateLimit-Limit"] == "10"  # the burst limit only
    usage = client.get("/api/usage", headers=headers).json()
    assert usage["calls_used"] == 1
