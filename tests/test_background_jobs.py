"""Background jobs: Notion usage sync, quota alerts, the nightly health log, schedule, CLI and portal.

Notion is the fake in tests/fakes/notion_server.py (real HTTP) driven by the real notion-client;
jobs marked as such run on a real RQ worker process (`python -m jobs.worker --burst`) against the
suite's Redis and PostgreSQL.
"""

import json
import logging
import os
import secrets
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from rq import Queue
from rq.job import Job as RQJob

from levqor_core import tiers
from levqor_core.accounts import service as accounts
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.metering import counters as metering
from levqor_core.metering.models import UsageDaily
from levqor_core.ops import alerts, health_log, notion, notion_sync, periodic
from levqor_core.ops.models import HealthLogEntry, QuotaAlert
from levqor_core.queue import PERIODIC_QUEUE

from .conftest import NOTION_TOKEN as TOKEN
from .helpers import ROOT, run_worker_burst
from .servers import free_port

# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def fake(notion_fake):
    return notion_fake


@pytest.fixture
def worker_env(database_url, redis_server, notion_server):
    return os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "LOG_LEVEL": "WARNING",
        "NOTION_TOKEN": TOKEN,
        "NOTION_PARENT_PAGE_ID": notion_server.parent,
        "NOTION_BASE_URL": notion_server.url,
        "NOTION_MAX_RPS": "0",
        "NOTION_MAX_ATTEMPTS": "2",
    }


def make_keys(app, n: int, tier_of=lambda i: "sandbox") -> list[tuple[int, str]]:
    """n accounts with one active key each, inserted in bulk; returns (account_id, key_id)."""
    with app.app_context():
        accounts = [
            {"email": f"bulk-{i}-{secrets.token_hex(3)}@example.com", "password_hash": "x", "tier": tier_of(i)}
            for i in range(n)
        ]
        ids = db.session.scalars(sa.insert(Account).returning(Account.id), accounts).all()
        now = datetime.now(UTC)
        rows = [
            {
                "id": "key_" + secrets.token_hex(8),
                "account_id": account_id,
                "key_hash": secrets.token_hex(32),
                "hint": "lvq_…abcd",
                "status": "active",
                "created_at": now - timedelta(minutes=i),
            }
            for i, account_id in enumerate(ids)
        ]
        db.session.execute(sa.insert(ApiKey), rows)
        db.session.commit()
        return [(r["account_id"], r["id"]) for r in rows]


def add_usage(app, key_id: str, account_id: int, calls: int, day=None) -> None:
    with app.app_context():
        day = day or datetime.now(UTC).date()
        row = db.session.get(UsageDaily, (key_id, day))
        if row is None:
            db.session.add(UsageDaily(key_id=key_id, day=day, account_id=account_id, calls=calls, sandbox_calls=0))
        else:
            row.calls = calls
        db.session.commit()


def sync_now(app) -> dict:
    with app.app_context():
        return periodic.run("notion-sync")


# -- Notion sync -------------------------------------------------------------------------------------


def test_sync_of_500_keys_on_a_real_worker_creates_500_rows_then_a_second_sync_writes_nothing(
    app, fake, notion_on, worker_env
):
    keys = make_keys(app, 500, tier_of=lambda i: ("sandbox", "pro", "enterprise")[i % 3])
    add_usage(app, keys[0][1], keys[0][0], 42)
    with app.app_context():
        job_id = periodic.enqueue("notion-sync")

    run_worker_burst(worker_env)

    rows = fake.rows_of("API Keys")
    assert len(rows) == 500
    assert {r["Key ID"] for r in rows} == {k for _, k in keys}
    by_key = {r["Key ID"]: r for r in rows}
    assert by_key[keys[0][1]]["Calls Used"] == 42 and by_key[keys[0][1]]["User ID"] == str(keys[0][0])
    assert by_key[keys[1][1]]["Tier"] == "pro" and by_key[keys[1][1]]["Calls Used"] == 0
    assert by_key[keys[1][1]]["Created At"].startswith(datetime.now(UTC).strftime("%Y-%m-%d")[:4])
    with app.app_context():
        job = RQJob.fetch(job_id, connection=app.extensions["levqor.redis"])
        assert job.get_status() == "finished"
        assert job.meta["progress"]["done"] == 500 and job.meta["progress"]["created"] == 500
        assert job.return_value()["created"] == 500

    writes_before = fake.writes
    second = sync_now(app)
    assert second["created"] == 0 and second["updated"] == 0 and second["unchanged"] == 500
    assert fake.writes == writes_before  # not one page written
    assert len(fake.rows_of("API Keys")) == 500


def test_the_database_is_created_once_with_the_right_property_types(app, fake, notion_on):
    make_keys(app, 3)
    sync_now(app)
    sync_now(app)
    assert fake.count("POST", "/v1/databases") == 1
    database = fake.database_named("API Keys")
    assert database["parent"] == {"type": "page_id", "page_id": notion_on.parent}
    schema = fake.data_sources[database["data_sources"][0]["id"]]["properties"]
    assert {name: p["type"] for name, p in schema.items()} == {
        "Key ID": "title",
        "User ID": "rich_text",
        "Tier": "select",
        "Calls Used": "number",
        "Created At": "date",
    }
    assert {o["name"] for o in schema["Tier"]["select"]["options"]} == set(tiers.TIERS)


def test_after_usage_changes_only_those_rows_are_updated(app, fake, notion_on):
    keys = make_keys(app, 30)
    sync_now(app)
    posts, patches = fake.count("POST", "/v1/pages"), fake.count("PATCH", r"/v1/pages/.+")

    # Live counters not yet persisted count too: the sync flushes them first.
    r = app.extensions["levqor.redis"]
    today = datetime.now(UTC).date()
    (a0, k0), (a1, k1), (a2, k2) = keys[:3]
    r.set(metering.daily_key(a0, k0, today), 7)
    r.sadd(metering.dirty_key(a0), f"{k0}|{a0}|{today.isoformat()}")
    add_usage(app, k1, a1, 99)
    with app.app_context():
        db.session.get(Account, a2).tier = "pro"
        db.session.commit()

    result = sync_now(app)
    assert result["updated"] == 3 and result["created"] == 0 and result["unchanged"] == 27
    assert fake.count("POST", "/v1/pages") == posts
    assert fake.count("PATCH", r"/v1/pages/.+") == patches + 3
    by_key = {row["Key ID"]: row for row in fake.rows_of("API Keys")}
    assert by_key[k0]["Calls Used"] == 7 and by_key[k1]["Calls Used"] == 99 and by_key[k2]["Tier"] == "pro"
    assert len(by_key) == 30


def test_an_interrupted_sync_on_the_worker_fails_and_the_rerun_leaves_exactly_500_rows(
    app, fake, notion_on, worker_env
):
    keys = make_keys(app, 500)
    fake.fail_writes_after(250, status=503)
    with app.app_context():
        failed_id = periodic.enqueue("notion-sync")
    run_worker_burst(worker_env)
    with app.app_context():
        r = app.extensions["levqor.redis"]
        assert RQJob.fetch(failed_id, connection=r).get_status() == "failed"
    assert len(fake.rows_of("API Keys")) == 250

    fake.recover()
    with app.app_context():
        periodic.enqueue("notion-sync")
    run_worker_burst(worker_env)

    rows = fake.rows_of("API Keys")
    assert len(rows) == 500
    assert sorted(r["Key ID"] for r in rows) == sorted(k for _, k in keys)
    with app.app_context():
        runs = {k.decode(): int(v) for k, v in app.extensions["levqor.redis"].hgetall("lvq:stats:job-runs").items()}
    assert runs == {"notion-sync|failed": 1, "notion-sync|succeeded": 1}


def test_a_create_whose_response_was_lost_is_found_instead_of_created_twice(app, fake, notion_on):
    make_keys(app, 5)
    fake.lose_next_create_response()
    result = sync_now(app)
    assert result["created"] == 5
    rows = fake.rows_of("API Keys")
    assert len(rows) == 5 and len({r["Key ID"] for r in rows}) == 5
    assert fake.count("POST", r"/v1/data_sources/.+/query") >= 2  # the look-up by Key ID before retrying


def test_notion_429_retry_after_is_honoured(app, fake, notion_on):
    fake.rate_per_second = 10
    make_keys(app, 25)
    with app.app_context():
        client = notion.from_app()
        result = notion_sync.sync(client, app.extensions["levqor.redis"])
    assert result.created == 25 and len(fake.rows_of("API Keys")) == 25
    assert fake.rate_limited > 0 and client.stats["rate_limited"] == fake.rate_limited
    assert fake.early_retries == 0  # never came back before Retry-After


def test_the_client_paces_itself_under_the_rate_limit(app, fake, notion_on, monkeypatch):
    fake.rate_per_second = 25
    monkeypatch.setitem(app.config, "NOTION_MAX_RPS", 20)
    make_keys(app, 30)
    sync_now(app)
    assert len(fake.rows_of("API Keys")) == 30
    assert fake.rate_limited == 0


def test_without_a_token_the_notion_jobs_are_skipped_with_a_log_line(app, caplog, monkeypatch):
    monkeypatch.setitem(app.config, "NOTION_TOKEN", "")
    # Alembic's fileConfig (run by the session's migrations) disables loggers that already exist.
    monkeypatch.setattr(logging.getLogger("levqor_core.ops.notion"), "disabled", False)
    make_keys(app, 2)
    with caplog.at_level(logging.INFO):
        result = sync_now(app)
        with app.app_context():
            logged = periodic.run("health-log", day=datetime.now(UTC).date().isoformat())
    assert "skipped" in result
    assert "NOTION_TOKEN is not set: skipping Notion work" in caplog.text
    assert logged["notion"].startswith("skipped")


def test_flask_jobs_run_shows_progress_and_the_result(app, fake, notion_on):
    make_keys(app, 12)
    result = app.test_cli_runner().invoke(args=["jobs", "run", "notion-sync"])
    assert result.exit_code == 0, result.output
    assert "notion-sync" in result.output
    assert json.loads(result.output[result.output.index("{") :])["created"] == 12
    assert len(fake.rows_of("API Keys")) == 12


# -- quota alerts ------------------------------------------------------------------------------------


@pytest.fixture
def webhook(app, monkeypatch):
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setitem(app.config, "ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/hook")
    yield received
    server.shutdown()
    server.server_close()


def _set_used(app, account_id: int, calls: int, now: datetime) -> None:
    with app.app_context():
        period = metering.current_period(db.session.get(Account, account_id), now)
        app.extensions["levqor.redis"].set(metering.usage_key(account_id, period), calls)


def _alerts(app, now: datetime) -> dict:
    with app.app_context():
        return alerts.run(app.extensions["levqor.redis"], now=now)


def test_alerts_fire_exactly_once_per_threshold_per_period(app, make_account, smtp, webhook, fake, notion_on):
    account_id, _ = make_account(tier="pro")
    quota = tiers.get("pro").monthly_quota
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)

    _set_used(app, account_id, quota * 80 // 100 - 1, now)
    assert _alerts(app, now)["new_alerts"] == 0 and smtp.messages == []

    _set_used(app, account_id, quota * 80 // 100, now)
    assert _alerts(app, now) == {"new_alerts": 1, "emailed": 1, "team_notified": 1, "failed": 0}
    assert _alerts(app, now)["new_alerts"] == 0  # same threshold, same period: nothing more
    assert len(smtp.messages) == 1 and "80 %" in smtp.messages[0][1]

    _set_used(app, account_id, quota + 5, now)
    assert _alerts(app, now)["new_alerts"] == 1
    assert _alerts(app, now)["new_alerts"] == 0
    assert len(smtp.messages) == 2 and "used all 10,000 calls" in smtp.messages[1][1]

    next_month = datetime(2026, 12, 2, tzinfo=UTC)  # a new period: the thresholds apply again
    _set_used(app, account_id, quota, next_month)
    crossed_both = _alerts(app, next_month)
    assert crossed_both["new_alerts"] == 2 and crossed_both["emailed"] == 1  # 80 % superseded by 100 %
    assert len(smtp.messages) == 3

    with app.app_context():
        email = db.session.get(Account, account_id).email
        rows = db.session.scalars(sa.select(QuotaAlert).order_by(QuotaAlert.id)).all()
        assert [(a.period_id, a.threshold, a.status) for a in rows] == [
            ("2026-11", 80, "sent"),
            ("2026-11", 100, "sent"),
            ("2026-12", 80, "superseded"),
            ("2026-12", 100, "sent"),
        ]
    assert all(rcpt == [email] for rcpt, _ in smtp.messages)
    assert [(w["threshold"], w["period"], w["account_id"]) for w in webhook] == [
        (80, "2026-11", account_id),
        (100, "2026-11", account_id),
        (100, "2026-12", account_id),
    ]
    team_rows = fake.rows_of("Alerts")
    assert sorted((r["Threshold"], r["Period"]) for r in team_rows) == [
        (0.8, "2026-11"),
        (1.0, "2026-11"),
        (1.0, "2026-12"),
    ]


def test_unlimited_tiers_never_alert_and_a_failed_email_is_retried(app, make_account, smtp, monkeypatch):
    unlimited, _ = make_account(tier="enterprise")
    sandbox, _ = make_account(tier="sandbox")
    now = datetime(2026, 11, 10, tzinfo=UTC)
    _set_used(app, unlimited, 10**9, now)
    _set_used(app, sandbox, tiers.get("sandbox").monthly_quota, now)

    monkeypatch.setitem(app.config, "SMTP_PORT", free_port())  # nothing listens: the send fails
    first = _alerts(app, now)
    assert first["new_alerts"] == 2 and first["failed"] == 1 and smtp.messages == []  # 80 % superseded

    monkeypatch.undo()  # SMTP back on the real inbox (undo resets every setting of this test)
    monkeypatch.setitem(app.config, "SMTP_HOST", "127.0.0.1")
    monkeypatch.setitem(app.config, "SMTP_PORT", smtp.port)
    monkeypatch.setitem(app.config, "SMTP_STARTTLS", False)
    second = _alerts(app, now)
    assert second["new_alerts"] == 0 and second["emailed"] == 1
    assert len(smtp.messages) == 1 and "used all 1,000 calls" in smtp.messages[0][1]
    with app.app_context():
        rows = db.session.scalars(sa.select(QuotaAlert)).all()
        assert {(a.account_id, a.threshold, a.status) for a in rows} == {
            (sandbox, 80, "superseded"),
            (sandbox, 100, "sent"),
        }
        assert rows[0].attempts + rows[1].attempts == 1


def test_quota_alerts_and_the_health_log_run_on_a_real_worker(app, make_account, smtp, fake, worker_env):
    """Enqueued as the cron scheduler does, executed by `python -m jobs.worker`: the alert email
    reaches the SMTP server and the day's entry reaches (fake) Notion."""
    account_id, _ = make_account(tier="pro")
    _set_used(app, account_id, tiers.get("pro").monthly_quota * 80 // 100, datetime.now(UTC))
    with app.app_context():
        alert_job = periodic.enqueue("quota-alerts")
        health_job = periodic.enqueue("health-log")
    env = worker_env | {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_STARTTLS": "0"}
    run_worker_burst(env)

    assert len(smtp.messages) == 1 and "80 %" in smtp.messages[0][1]
    assert len(fake.rows_of("System Health Log")) == 1
    queue = Queue(PERIODIC_QUEUE, connection=app.extensions["levqor.redis"])
    for job_id in (alert_job, health_job):
        job = queue.fetch_job(job_id)
        assert job.get_status() == "finished", job.latest_result()
    with app.app_context():
        assert db.session.scalars(sa.select(QuotaAlert.status)).all() == ["sent"]


# -- health log --------------------------------------------------------------------------------------


def test_the_health_log_entry_summarises_the_day_in_notion(app, client, make_account, fake, notion_on):
    from levqor_core.ops import daily_stats

    r = app.extensions["levqor.redis"]
    daily_stats.flush_daily_stats(r)
    r.delete(daily_stats.day_key(datetime.now(UTC).date()))  # only this test's requests
    account_id, raw = make_account(tier="sandbox")
    make_account(tier="pro", with_key=False)
    for _ in range(4):
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
    _set_used(app, account_id, tiers.get("sandbox").monthly_quota, datetime.now(UTC))
    refused = client.get("/api/v1/workflows", headers={"x-api-key": raw})
    assert refused.status_code == 429
    daily_stats.record_job_run(r, "notion-sync", "failed")

    today = datetime.now(UTC).date()
    with app.app_context():
        result = periodic.run("health-log", day=today.isoformat())
    assert result["requests"] >= 5 and result["rate_limited"] == 1 and result["errors"] == 0
    assert result["refusals"] == {"monthly-quota-exceeded": 1}
    assert result["keys_created"] == 1 and result["active_keys"] == 1 and result["job_failures"] == 1
    assert result["p95_latency_ms"] is not None and result["p95_latency_ms"] > 0

    (row,) = fake.rows_of("System Health Log")
    assert row["Day"] == today.isoformat() and row["Date"] == today.isoformat()
    assert row["Requests"] == result["requests"] and row["429s"] == 1 and row["Errors"] == 0
    assert row["Keys Created"] == 1 and row["Active Keys"] == 1 and row["Job Failures"] == 1
    assert row["P95 Latency (ms)"] == result["p95_latency_ms"]

    with app.app_context():  # a rerun updates the same entry rather than adding one
        periodic.run("health-log", day=today.isoformat())
        assert db.session.get(HealthLogEntry, today).notion_page_id == row["_id"]
    assert len(fake.rows_of("System Health Log")) == 1


def test_health_log_figures_default_to_yesterday(app):
    with app.app_context():
        result = periodic.run("health-log")
    assert result["day"] == (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert health_log.SCHEMA["Day"] == {"title": {}}


# -- schedule and worker -----------------------------------------------------------------------------


def test_the_schedule_comes_from_the_environment():
    env = os.environ | {"JOBS_QUOTA_ALERTS_CRON": "*/5 * * * *", "JOBS_HEALTH_LOG_CRON": ""}
    code = (
        "from rq.cron import CronScheduler; import redis\n"
        "s = CronScheduler(connection=redis.Redis()); s.load_config_from_file('jobs.schedule')\n"
        "print(sorted((j.name, j.cron, j.func_name, j.args) for j in s.get_jobs()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(
        [
            ("billing-downgrade", "30 0 * * *", "jobs.tasks.run_periodic", ("billing-downgrade",)),
            ("notion-sync", "15 2 * * *", "jobs.tasks.run_periodic", ("notion-sync",)),
            ("purge-jobs", "45 0 * * *", "jobs.tasks.run_periodic", ("purge-jobs",)),
            ("purge-request-log", "55 * * * *", "jobs.tasks.run_periodic", ("purge-request-log",)),
            ("purge-webhook-deliveries", "50 0 * * *", "jobs.tasks.run_periodic", ("purge-webhook-deliveries",)),
            ("quota-alerts", "*/5 * * * *", "jobs.tasks.run_periodic", ("quota-alerts",)),
            ("requeue-jobs", "* * * * *", "jobs.tasks.run_periodic", ("requeue-jobs",)),
            ("trim-request-log", "* * * * *", "jobs.tasks.run_periodic", ("trim-request-log",)),
            ("webhook-sweep", "* * * * *", "jobs.tasks.run_periodic", ("webhook-sweep",)),
        ]
    )


def test_only_one_worker_process_enqueues_each_periodic_job(app):
    from jobs.tasks import run_periodic
    from jobs.worker import LeaderCronScheduler

    r = app.extensions["levqor.redis"]
    first, second = LeaderCronScheduler(connection=r), LeaderCronScheduler(connection=r)
    for s in (first, second):
        s.register(run_periodic, PERIODIC_QUEUE, args=("quota-alerts",), interval=600, name="quota-alerts")
    assert len(first.enqueue_jobs()) == 1
    assert second.enqueue_jobs() == []
    assert Queue(PERIODIC_QUEUE, connection=r).count == 1


def _due_now(scheduler, cron: str = "* * * * *"):
    from jobs.tasks import run_periodic

    scheduler.register(run_periodic, PERIODIC_QUEUE, args=("quota-alerts",), cron=cron, name="quota-alerts")
    (job,) = scheduler.get_jobs()
    job.next_enqueue_time = datetime.now(UTC) - timedelta(seconds=1)
    return job


def test_a_follower_sleeps_and_does_not_repeat_the_leaders_run_when_it_takes_over(app):
    from jobs.worker import LEADER_KEY, LeaderCronScheduler

    r = app.extensions["levqor.redis"]
    leader, follower = LeaderCronScheduler(connection=r), LeaderCronScheduler(connection=r)
    _due_now(leader)
    followed = _due_now(follower)
    assert len(leader.enqueue_jobs()) == 1
    assert follower.enqueue_jobs() == []
    assert followed.next_enqueue_time > datetime.now(UTC)  # moved past the leader's run
    assert follower.calculate_sleep_interval() >= 1.0  # sleeps until then (it used to poll with 0)

    r.delete(LEADER_KEY)  # the leader died; its lease ran out
    assert follower.enqueue_jobs() == []  # nothing due: the leader's run is not enqueued twice
    assert Queue(PERIODIC_QUEUE, connection=r).count == 1


def test_a_run_the_dead_leader_never_enqueued_is_made_late_by_the_next_leader(app):
    from jobs.worker import LEADER_KEY, LeaderCronScheduler

    r = app.extensions["levqor.redis"]
    r.set(LEADER_KEY, "a-worker-that-died", ex=60)
    follower = LeaderCronScheduler(connection=r)
    _due_now(follower)
    assert follower.enqueue_jobs() == []
    assert follower.calculate_sleep_interval() == 1.0  # still due: polls once a second, not in a busy loop
    r.delete(LEADER_KEY)
    assert [job.name for job in follower.enqueue_jobs()] == ["quota-alerts"]
    assert Queue(PERIODIC_QUEUE, connection=r).count == 1


def test_the_lease_is_renewed_only_by_its_holder_and_taken_only_when_free(app):
    from jobs.worker import LEADER_KEY, LEADER_TTL, LeaderCronScheduler

    r = app.extensions["levqor.redis"]
    a, b = LeaderCronScheduler(connection=r), LeaderCronScheduler(connection=r)
    assert a._lead() and not b._lead()
    r.expire(LEADER_KEY, 1)
    assert a._lead() and r.ttl(LEADER_KEY) > 1  # renewed by its holder
    # The lease ran out and b took it: a's next renewal must not extend b's lease as its own.
    r.delete(LEADER_KEY)
    assert b._lead()
    r.expire(LEADER_KEY, 5)
    assert not a._lead()
    assert r.get(LEADER_KEY).decode() == b.name and r.ttl(LEADER_KEY) <= 5 < LEADER_TTL


def test_a_lease_lost_mid_renewal_makes_no_second_leader(app):
    """The lease runs out and another process takes it between the holder's read and its renewal
    (a GC pause, a slow network): the holder must not go on leading beside it."""
    from jobs.worker import LEADER_KEY, LeaderCronScheduler

    r = app.extensions["levqor.redis"]
    b = LeaderCronScheduler(connection=r)

    class TakenOverAfterEachRead:
        """The holder's connection; every command it sends passes through, and right after it reads
        the lease, the lease expires and b takes it."""

        def __getattr__(self, name):
            return getattr(r, name)

        def get(self, key):
            value = r.get(key)
            r.delete(LEADER_KEY)
            assert b._lead()
            return value

    a = LeaderCronScheduler(connection=r)
    assert a._lead()
    a.connection = TakenOverAfterEachRead()
    r.delete(LEADER_KEY)
    assert b._lead()
    r.delete(LEADER_KEY)
    r.set(LEADER_KEY, a.name, ex=60)  # a holds it again; b is about to take it mid-renewal
    led = a._lead()
    holder = r.get(LEADER_KEY).decode()
    assert not (led and holder == b.name), "two leaders"


# -- the portal's job status -------------------------------------------------------------------------


def test_ops_page_polls_the_sync_progress_until_it_finishes(app, cx, portal, fake, notion_on, worker_env, monkeypatch):
    make_keys(app, 20)
    operator = portal().sign_up()
    with app.app_context():
        accounts.grant_role(accounts.by_email(operator.email), accounts.OPS_ROLE)
    page = operator.client.get("/developer/ops")
    assert page.status_code == 200 and "No Notion sync has run" in page.text

    started = operator.client.post("/developer/ops/notion-sync", data={"csrf_token": operator.csrf})
    assert started.status_code == 302
    fragment = operator.client.get("/developer/ops", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="sync-status"')
    assert 'hx-trigger="every 2s"' in fragment.text and 'data-state="queued"' in fragment.text

    run_worker_burst(worker_env)

    fragment = operator.client.get("/developer/ops", headers={"HX-Request": "true"})
    assert 'data-state="finished"' in fragment.text and "hx-trigger" not in fragment.text
    assert "20 of 20 keys" in fragment.text and "20 created" in fragment.text
    assert 'value="100"' in fragment.text


def test_ops_page_is_for_operators_only(client, portal):
    assert client.get("/developer/ops").status_code == 302  # to the log-in page
    developer = portal().sign_up()
    denied = developer.client.get("/developer/ops")
    assert denied.status_code == 403 and "Operators only" in denied.text
    assert developer.client.post("/developer/ops/notion-sync", data={"csrf_token": developer.csrf}).status_code == 403


def test_flask_jobs_schedule_shows_each_jobs_cron_from_the_environment(app, monkeypatch):
    monkeypatch.setenv("JOBS_QUOTA_ALERTS_CRON", "*/5 * * * *")
    monkeypatch.setenv("JOBS_HEALTH_LOG_CRON", "")
    result = app.test_cli_runner().invoke(args=["jobs", "schedule"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "notion-sync    15 2 * * *",
        "quota-alerts   */5 * * * *",
        "health-log     disabled",
        "requeue-jobs   * * * * *",
        "billing-downgrade 30 0 * * *",
        "purge-jobs     45 0 * * *",
        "webhook-sweep  * * * * *",
        "purge-webhook-deliveries 50 0 * * *",
        "trim-request-log * * * * *",
        "purge-request-log 55 * * * *",
    ]
