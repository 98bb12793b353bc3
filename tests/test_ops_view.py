"""The operator's view (/developer/ops) and the same figures on /metrics, on real Redis, PostgreSQL
and a real RQ worker process; and /metrics closed on a dyno without METRICS_TOKEN."""

import math
import os
import re
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis as redis_py
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue, Worker

from jobs.worker import PERIODIC_WORKERS, WEBHOOK_WORKERS
from levqor_core import tiers
from levqor_core.accounts import service as accounts
from levqor_core.accounts.models import Account
from levqor_core.apijobs.models import Job
from levqor_core.app import create_app
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.ops import metrics
from levqor_core.ops import status as ops_status
from levqor_core.ops.models import HealthLogEntry
from levqor_core.queue import API_QUEUE, PERIODIC_QUEUE, WEBHOOK_QUEUE
from portal.helpers import charts

from .helpers import procfile, start_procfile_line, stop_procfile_line

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_ops_figures():
    """The database figures are cached per process; each test starts with an empty database."""
    ops_status.DB_FIGURES.clear()


@pytest.fixture
def operator(app, portal):
    session = portal().sign_up()
    with app.app_context():
        accounts.grant_role(accounts.by_email(session.email), accounts.OPS_ROLE)
    return session


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels):
    return samples.get((name, frozenset(labels.items())))


def attr(html: str, pattern: str) -> str:
    found = re.search(pattern, html, re.S)
    assert found, f"{pattern!r} not in page"
    return found.group(1)


def queue_row(html: str, name: str) -> str:
    return attr(html, rf'(<tr data-queue="{re.escape(name)}">.*?</tr>)')


def _wait(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def rq_worker(redis_server):
    """A real, long-lived (not --burst) RQ worker process on the API queue only; killed at the end."""
    procs = []

    def start(name: str) -> subprocess.Popen:
        code = (
            "import sys, redis\n"
            "from rq import Worker\n"
            f"Worker([{API_QUEUE!r}], connection=redis.Redis.from_url(sys.argv[1]), name={name!r}).work()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, redis_server.url],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


# -- workers and queues ------------------------------------------------------------------------------


def test_ops_page_and_metrics_show_a_live_worker_its_current_job_and_the_oldest_waiting_job(
    app, client, operator, rq_worker
):
    r = app.extensions["levqor.redis"]
    rq_worker("ops-test-worker")
    api = Queue(API_QUEUE, connection=r)
    running = api.enqueue("time.sleep", 30, job_timeout=60)
    _wait(
        lambda: any(w.get_current_job_id() == running.id for w in Worker.all(connection=r)),
        what="the worker to start the sleeping job",
    )
    before_enqueue = time.time()
    waiting = [api.enqueue("time.sleep", 0)]
    periodic_waiting = Queue(PERIODIC_QUEUE, connection=r).enqueue("time.sleep", 0)
    time.sleep(1.5)
    waiting.append(api.enqueue("time.sleep", 0))  # a newer one behind it: the age is the oldest's
    time.sleep(1.0)

    page = operator.client.get("/developer/ops")
    assert page.status_code == 200
    html = page.text
    row = attr(html, r'(<tr data-worker="ops-test-worker".*?</tr>)')
    assert 'data-alive="yes"' in row and 'data-state="busy"' in row
    assert f'data-current-job="{running.id}"' in row
    assert "<code>levqor</code>" in row and "levqor-periodic" not in row
    assert float(attr(row, r'data-heartbeat-age="([\d.]+)"')) < 30

    elapsed = time.time() - before_enqueue
    api_row = queue_row(html, API_QUEUE)
    assert 'data-depth="2"' in api_row and 'data-workers-alive="1"' in api_row
    assert 2.5 <= float(attr(api_row, r'data-oldest-age="([\d.]+)"')) <= elapsed + 1
    periodic_row = queue_row(html, PERIODIC_QUEUE)
    assert 'data-depth="1"' in periodic_row and 'data-workers-alive="0"' in periodic_row
    assert "no worker" in periodic_row

    fragment = operator.client.get("/developer/ops/status")
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section id="ops-status"')
    assert 'hx-trigger="every 10s"' in fragment.text and 'hx-target="this"' in fragment.text
    assert f'data-current-job="{running.id}"' in fragment.text

    samples = scrape(client)
    assert value(samples, "levqor_rq_workers_alive", queue=API_QUEUE) == 1
    assert value(samples, "levqor_rq_workers_busy", queue=API_QUEUE) == 1
    assert value(samples, "levqor_rq_workers_alive", queue=PERIODIC_QUEUE) == 0
    assert value(samples, "levqor_queue_depth", queue=API_QUEUE) == 2
    assert value(samples, "levqor_queue_depth", queue=PERIODIC_QUEUE) == 1
    assert value(samples, "levqor_rq_jobs", queue=API_QUEUE, state="started") == 1
    elapsed = time.time() - before_enqueue
    assert 2.5 <= value(samples, "levqor_queue_oldest_job_age_seconds", queue=API_QUEUE) <= elapsed + 1
    assert value(samples, "levqor_queue_oldest_job_age_seconds", queue=PERIODIC_QUEUE) >= 2.5
    assert value(samples, "levqor_up", component="redis") == 1
    assert api.get_job_ids() == [j.id for j in waiting]
    assert Queue(PERIODIC_QUEUE, connection=r).get_job_ids() == [periodic_waiting.id]


@pytest.fixture
def shipped_worker(database_url, redis_server):
    """The Procfile's `worker` line as it is (not --burst), run as the platform runs it."""
    env = os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "WORKER_CONCURRENCY": "2",
        "LOG_LEVEL": "WARNING",
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    process = start_procfile_line(procfile()["worker"], env)
    yield process
    stop_procfile_line(process)


def test_the_shipped_worker_pool_appears_per_queue_and_its_jobs_in_the_24h_figures(
    app, client, operator, make_account, shipped_worker, monkeypatch
):
    monkeypatch.setitem(app.config, "OPS_DB_CACHE_SECONDS", 0)
    r = app.extensions["levqor.redis"]

    def alive():
        samples = scrape(client)
        return (
            value(samples, "levqor_rq_workers_alive", queue=API_QUEUE) == 2
            and value(samples, "levqor_rq_workers_alive", queue=PERIODIC_QUEUE) == PERIODIC_WORKERS
            and value(samples, "levqor_rq_workers_alive", queue=WEBHOOK_QUEUE) == WEBHOOK_WORKERS
        )

    _wait(alive, timeout=60, what="2 API workers, the periodic and the webhook workers")
    html = operator.client.get("/developer/ops").text
    assert 'data-workers-alive="2"' in queue_row(html, API_QUEUE)
    assert f'data-workers-alive="{PERIODIC_WORKERS}"' in queue_row(html, PERIODIC_QUEUE)
    assert f'data-workers-alive="{WEBHOOK_WORKERS}"' in queue_row(html, WEBHOOK_QUEUE)
    assert html.count('data-alive="yes"') == len(Worker.all(connection=r)) == 2 + PERIODIC_WORKERS + WEBHOOK_WORKERS

    _, raw = make_account(tier="pro")
    created = client.post("/api/v1/jobs", json={"workflow": "echo", "input": {"x": 1}}, headers={"x-api-key": raw})
    assert created.status_code == 202
    job_id = created.json()["id"]
    _wait(
        lambda: client.get(f"/api/v1/jobs/{job_id}", headers={"x-api-key": raw}).json()["status"] == "succeeded",
        what="the echo job to succeed",
    )
    samples = scrape(client)
    assert value(samples, "levqor_api_jobs_finished_24h", status="succeeded") == 1
    assert value(samples, "levqor_api_job_duration_p95_seconds") >= 0
    assert value(samples, "levqor_queue_depth", queue=API_QUEUE) == 0


def test_no_worker_at_all_is_said_plainly_and_empty_queues_have_age_zero(app, client, operator):
    html = operator.client.get("/developer/ops").text
    assert 'data-workers="0"' in html and "jobs are not running" in html
    for name in (API_QUEUE, PERIODIC_QUEUE, WEBHOOK_QUEUE):
        row = queue_row(html, name)
        assert 'data-depth="0"' in row and 'data-workers-alive="0"' in row
    samples = scrape(client)
    for name in (API_QUEUE, PERIODIC_QUEUE, WEBHOOK_QUEUE):
        assert value(samples, "levqor_rq_workers_alive", queue=name) == 0
        assert value(samples, "levqor_queue_oldest_job_age_seconds", queue=name) == 0


# -- API jobs over 24 h --------------------------------------------------------------------------------


def _add_jobs(app, rows: list[tuple[str, float | None, timedelta | None]]) -> None:
    """(status, duration in seconds or None, how long ago it finished or None)."""
    now = datetime.now(UTC)
    with app.app_context():
        account = Account(email="jobs-owner@example.com", password_hash="x", tier="pro")
        db.session.add(account)
        db.session.flush()
        for i, (status, seconds, ago) in enumerate(rows):
            finished = now - ago if ago is not None else None
            started = finished - timedelta(seconds=seconds) if finished and seconds is not None else None
            db.session.add(
                Job(
                    id=f"job_{i:028d}",
                    account_id=account.id,
                    workflow="echo",
                    input={},
                    status=status,
                    created_at=(started or now) - timedelta(seconds=1),
                    started_at=started if status != "queued" else None,
                    finished_at=finished,
                )
            )
        db.session.commit()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


def test_job_rates_and_p95_duration_cover_the_last_24_hours_only(app, client, operator):
    recent = timedelta(hours=1)
    succeeded = [float(s) for s in range(1, 21)]  # 1 s .. 20 s
    failed = [100.0, 101.5, 102.0, 103.25, 104.0]
    rows = [("succeeded", s, recent) for s in succeeded] + [("failed", s, recent) for s in failed]
    rows += [("canceled", 500.0, recent), ("canceled", None, recent)]  # never counted in the p95
    rows += [("succeeded", 9999.0, timedelta(hours=25)), ("failed", 9999.0, timedelta(hours=30))]  # too old
    rows += [("queued", None, None), ("running", None, None)]
    _add_jobs(app, rows)
    # The second canceled job never started: its row has a finished_at and no started_at.
    expected_p95 = nearest_rank(succeeded + failed, 0.95)
    finished = len(succeeded) + len(failed) + 2

    html = operator.client.get("/developer/ops").text
    card = attr(html, r'(<div class="card" id="ops-jobs">.*?</div>\s*<div class="card" id="ops-redis">)')
    assert f'data-finished="{finished}"' in card
    assert f"{len(succeeded)} succeeded, {len(failed)} failed, 2 canceled" in card
    assert float(attr(card, r'data-success-rate="([\d.]+)"')) == pytest.approx(len(succeeded) / finished, abs=1e-4)
    assert float(attr(card, r'data-failure-rate="([\d.]+)"')) == pytest.approx(len(failed) / finished, abs=1e-4)
    assert float(attr(card, r'data-p95="([\d.]+)"')) == pytest.approx(expected_p95, abs=0.01)
    assert "1 queued, 1 running" in card

    samples = scrape(client)
    assert value(samples, "levqor_api_jobs_finished_24h", status="succeeded") == len(succeeded)
    assert value(samples, "levqor_api_jobs_finished_24h", status="failed") == len(failed)
    assert value(samples, "levqor_api_jobs_finished_24h", status="canceled") == 2
    assert value(samples, "levqor_api_job_duration_p95_seconds") == pytest.approx(expected_p95, abs=0.01)
    assert value(samples, "levqor_api_jobs", state="succeeded") == len(succeeded) + 1  # all time
    assert value(samples, "levqor_api_jobs", state="queued") == 1


def test_no_finished_job_gives_no_rate_and_no_p95(app, client, operator):
    html = operator.client.get("/developer/ops").text
    assert 'data-finished="0"' in html and 'data-p95="None"' in html
    samples = scrape(client)
    assert value(samples, "levqor_api_job_duration_p95_seconds") is None
    assert value(samples, "levqor_api_jobs_finished_24h", status="failed") == 0


# -- bounded scrape cost ---------------------------------------------------------------------------------


@pytest.fixture
def job_queries(app):
    """SQL statements that read the jobs table, as the database receives them."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        if re.search(r"\bFROM jobs\b", statement):
            seen.append(statement)

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


def test_scrapes_run_the_jobs_queries_once_per_cache_period_across_processes(
    app, client, make_account, job_queries, monkeypatch
):
    # A period far longer than the scrapes take, however loaded the machine; shortened below.
    monkeypatch.setitem(app.config, "OPS_DB_CACHE_SECONDS", 30.0)
    _add_jobs(app, [("succeeded", 1.0, timedelta(minutes=5))])
    assert value(scrape(client), "levqor_api_jobs", state="succeeded") == 1
    first = len(job_queries)
    assert first >= 2  # by state, and the 24 h figures

    for _ in range(20):
        scrape(client)
    assert len(job_queries) == first  # 20 more scrapes, no query

    # Another process (here: this one with its own cache emptied) takes the figures from Redis.
    ops_status.DB_FIGURES.clear()
    scrape(client)
    assert len(job_queries) == first

    # While another process holds the recomputation lock, stale figures are served, no query.
    r = app.extensions["levqor.redis"]
    _add_jobs_more(app)
    monkeypatch.setitem(app.config, "OPS_DB_CACHE_SECONDS", 0.5)
    time.sleep(0.6)  # the cached figures are now past the period
    ops_status.DB_FIGURES.clear()
    r.set(ops_status.LOCK_KEY, "other-process", ex=5)
    assert value(scrape(client), "levqor_api_jobs", state="failed") == 0
    assert len(job_queries) == first

    # Once the lock is gone, the next scrape past the cache period recomputes, once.
    r.delete(ops_status.LOCK_KEY)
    ops_status.DB_FIGURES.clear()
    samples = scrape(client)
    assert value(samples, "levqor_api_jobs", state="failed") == 1
    assert value(samples, "levqor_api_jobs_figures_age_seconds") < 1.0
    assert first < len(job_queries) <= 2 * first
    monkeypatch.setitem(app.config, "OPS_DB_CACHE_SECONDS", 30.0)
    scrape(client)
    assert len(job_queries) <= 2 * first


def _add_jobs_more(app):
    with app.app_context():
        account_id = db.session.scalar(sa.select(Account.id))
        now = datetime.now(UTC)
        db.session.add(
            Job(
                id="job_" + "f" * 28,
                account_id=account_id,
                workflow="echo",
                input={},
                status="failed",
                started_at=now - timedelta(seconds=2),
                finished_at=now,
            )
        )
        db.session.commit()


# -- Redis memory, 5xx and 429 ------------------------------------------------------------------------


@pytest.fixture
def redis_limit(app):
    r = app.extensions["levqor.redis"]
    old = r.config_get("maxmemory-policy")["maxmemory-policy"]
    yield r
    r.config_set("maxmemory", 0)
    r.config_set("maxmemory-policy", old)


def test_redis_memory_is_shown_against_its_limit_and_policy(app, client, operator, redis_limit):
    r = redis_limit
    r.config_set("maxmemory", 256 * 1024 * 1024)
    r.config_set("maxmemory-policy", "noeviction")
    html = operator.client.get("/developer/ops").text
    used = int(attr(html, r'data-used="(\d+)"'))
    reading = r.info("memory")["used_memory"]
    assert 0.5 * reading < used < 2 * reading
    assert 'data-max="268435456"' in html and "256.0 MiB" in html
    assert 'data-policy="noeviction"' in html
    samples = scrape(client)
    assert value(samples, "levqor_redis_memory_max_bytes") == 256 * 1024 * 1024
    assert 0.5 * reading < value(samples, "levqor_redis_memory_used_bytes") < 2 * reading

    r.config_set("maxmemory", 0)
    html = operator.client.get("/developer/ops").text
    assert 'data-max="0"' in html and "no limit" in html


def test_5xx_and_429_counts_of_today_from_every_process(app, client, operator, make_account):
    r = app.extensions["levqor.redis"]
    account_id, raw = make_account(tier="sandbox")
    with app.app_context():
        period = metering.current_period(db.session.get(Account, account_id), datetime.now(UTC))
    r.set(metering.usage_key(account_id, period), tiers.get("sandbox").monthly_quota)
    for _ in range(3):
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 429
    # Another web process's flushed totals: 2 server errors it answered today.
    r.hincrby(metrics.day_key(datetime.now(UTC).date()), "errors", 2)
    r.hincrby(metrics.day_key(datetime.now(UTC).date() - timedelta(days=1)), "rate_limited", 7)

    html = operator.client.get("/developer/ops").text
    today = attr(html, r'(<tr data-day="today">.*?</tr>)')
    assert 'data-429="3"' in today and 'data-5xx="2"' in today
    yesterday = attr(html, r'(<tr data-day="yesterday">.*?</tr>)')
    assert 'data-429="7"' in yesterday and 'data-5xx="0"' in yesterday


# -- the 30-day chart -----------------------------------------------------------------------------------


def test_the_health_log_chart_draws_30_nights_and_shows_the_missing_ones(app, operator):
    today = datetime.now(UTC).date()
    logged = {
        today - timedelta(days=1): {"requests": 4000, "errors": 10, "rate_limited": 990, "p95_latency_ms": 12.5},
        today - timedelta(days=2): {"requests": 2000, "errors": 0, "rate_limited": 0, "p95_latency_ms": 9.0},
        today - timedelta(days=30): {"requests": 1000, "errors": 1, "rate_limited": 1, "p95_latency_ms": 8.0},
        today - timedelta(days=45): {"requests": 99999, "errors": 0, "rate_limited": 0, "p95_latency_ms": 1.0},
    }
    with app.app_context():
        for day, figures in logged.items():
            db.session.add(HealthLogEntry(day=day, figures={"day": day.isoformat(), "job_failures": 0} | figures))
        db.session.commit()

    html = operator.client.get("/developer/ops").text
    chart = attr(html, r'(<section id="health-chart".*?</section>)')
    days = re.findall(r'<g data-day="([\d-]+)" data-requests="(\d+)">', chart)
    assert len(days) == 30
    assert days[-1] == ((today - timedelta(days=1)).isoformat(), "4000")
    assert days[0] == ((today - timedelta(days=30)).isoformat(), "1000")
    assert (today - timedelta(days=45)).isoformat() not in chart
    assert 'data-missing-nights="27"' in chart
    assert "12.5" in chart  # the p95 latency in the table


def test_health_chart_bars_scale_to_a_round_maximum_and_the_refused_part_sits_inside():
    last = date(2026, 11, 30)
    entries = [
        {"day": "2026-11-30", "requests": 3000, "errors": 300, "rate_limited": 450},
        {"day": "2026-11-29", "requests": 1500, "errors": 0, "rate_limited": 0},
    ]
    chart = charts.health_chart(entries, last_day=last, days=7)
    assert chart.scale_max == 4000 and len(chart.bars) == 7
    span = chart.plot_bottom - chart.plot_top
    big, half = chart.bars[-1], chart.bars[-2]
    assert big.requests_h == pytest.approx(span * 3000 / 4000, abs=0.01)
    assert half.requests_h == pytest.approx(big.requests_h / 2, abs=0.01)
    assert big.refused_h == pytest.approx(big.requests_h * 750 / 3000, abs=0.01)
    assert big.refused_y + big.refused_h == pytest.approx(chart.plot_bottom)
    assert [b.logged for b in chart.bars] == [False] * 5 + [True, True]


# -- outages --------------------------------------------------------------------------------------------


def test_with_redis_down_the_page_and_metrics_show_what_the_database_knows(app, client, operator, outage):
    _add_jobs(app, [("succeeded", 2.0, timedelta(minutes=1)), ("failed", 4.0, timedelta(minutes=1))])
    outage()
    page = operator.client.get("/developer/ops")
    assert page.status_code == 200
    assert 'data-redis="down"' in page.text
    assert 'data-finished="2"' in page.text  # the database side is still shown
    assert 'id="health-chart"' in page.text
    assert 'data-unavailable="workers"' in page.text or "Cannot be read" in page.text
    fragment = operator.client.get("/developer/ops/status")
    assert fragment.status_code == 200 and 'data-redis="down"' in fragment.text

    samples = scrape(client)
    assert value(samples, "levqor_up", component="redis") == 0
    assert value(samples, "levqor_up", component="database") == 1
    assert value(samples, "levqor_api_jobs", state="failed") == 1
    assert value(samples, "levqor_queue_depth", queue=API_QUEUE) is None  # unknown, not 0


def test_with_redis_full_the_page_still_renders(app, client, operator, redis_limit):
    r = redis_limit
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", r.info("memory")["used_memory"] + 512 * 1024)
    blob = "x" * 64 * 1024
    with pytest.raises(redis_py.exceptions.OutOfMemoryError):
        for i in range(10_000):
            r.set(f"filler:{i}", blob)
    page = operator.client.get("/developer/ops")
    assert page.status_code == 200
    assert 'data-policy="noeviction"' in page.text
    assert scrape(client)[("levqor_up", frozenset({("component", "redis")}))] == 1
    r.flushdb()


# -- who sees it ------------------------------------------------------------------------------------------


def test_the_status_fragment_is_for_operators_only(client, portal):
    assert client.get("/developer/ops/status").status_code == 302
    developer = portal().sign_up()
    assert developer.client.get("/developer/ops/status").status_code == 403


@pytest.fixture
def dyno_app(redis_server, database_url, monkeypatch):
    """A second app built from the environment of a dyno (DYNO set, no METRICS_TOKEN)."""

    def build(**env):
        monkeypatch.setenv("DYNO", "web.1")
        monkeypatch.setenv("SECRET_KEY", "dyno-secret")
        monkeypatch.delenv("METRICS_TOKEN", raising=False)
        for name, val in env.items():
            monkeypatch.setenv(name, val)
        return create_app(
            {
                "SQLALCHEMY_DATABASE_URI": database_url.replace("postgresql://", "postgresql+psycopg://"),
                "REDIS_URL": redis_server.url,
                "RATELIMIT_STORAGE_URI": redis_server.url,
                "USAGE_FLUSH_SECONDS": 0,
            }
        )

    return build


def test_metrics_are_closed_on_a_dyno_without_a_token(dyno_app):
    closed = dyno_app().test_client().get("/metrics")
    assert closed.status_code == 403 and "METRICS_TOKEN" in closed.text
    assert "levqor_" not in closed.text


def test_metrics_on_a_dyno_need_the_token_once_it_is_set(dyno_app):
    client = dyno_app(METRICS_TOKEN="scrape-secret").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200


def test_metrics_stay_open_locally_without_a_token(client):
    assert client.get("/metrics").status_code == 200


def test_the_notion_sync_status_is_read_from_rq_by_the_core(app, outage):
    """The ops view only renders it: state and job.meta progress come from levqor_core.ops.status."""
    from rq.job import Job as RQJob

    from levqor_core.ops import periodic

    r = app.extensions["levqor.redis"]
    r.delete(periodic.last_job_key("notion-sync"))
    assert ops_status.notion_sync_status(r)["state"] == "never"

    job = RQJob.create("levqor_core.ops.periodic.last_job_key", args=("x",), connection=r)
    job.meta["progress"] = {"phase": "keys", "done": 5, "total": 20, "created": 5}
    job.save()
    job.set_status("started")
    r.set(periodic.last_job_key("notion-sync"), job.id)
    status = ops_status.notion_sync_status(r)
    assert status["job_id"] == job.id and status["state"] == "started" and status["running"] is True
    assert status["percent"] == 25 and status["progress"]["phase"] == "keys" and status["error"] is None

    job.set_status("failed")
    failed = ops_status.notion_sync_status(r)
    assert failed["running"] is False and "resumes where it stopped" in failed["error"]

    outage()  # Redis stops; the fixture starts it again
    unknown = ops_status.notion_sync_status(r)
    assert unknown["state"] == "unknown" and "Redis does not answer" in unknown["error"]
