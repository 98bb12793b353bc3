"""GET /metrics: Prometheus text with request counts and latencies, refusals, jobs and queue depth."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.metering import counters as metering
from levqor_core.ops import daily_stats
from levqor_core.ops import status as ops_status

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_ops_figures():
    """The database figures are cached per process; each test starts with an empty database."""
    ops_status.DB_FIGURES.clear()


def scrape(client) -> dict:
    """{(sample name, frozenset(labels)): value} from /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_latencies_and_refusals_by_operation(app, client, make_account):
    account_id, raw = make_account(tier="sandbox")
    before = scrape(client)
    for _ in range(3):
        assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 200
    assert client.get("/api/v1/workflows", headers={"x-api-key": "lvq_nonsense"}).status_code == 401
    with app.app_context():
        period = metering.current_period(db.session.get(Account, account_id), datetime.now(UTC))
    app.extensions["levqor.redis"].set(metering.usage_key(account_id, period), tiers.get("sandbox").monthly_quota)
    assert client.get("/api/v1/workflows", headers={"x-api-key": raw}).status_code == 429

    after = scrape(client)
    ok = {"operation": "list_workflows", "method": "GET", "status": "200"}
    assert value(after, "levqor_http_requests_total", **ok) - value(before, "levqor_http_requests_total", **ok) == 3
    for status in ("401", "429"):
        labels = ok | {"status": status}
        assert (
            value(after, "levqor_http_requests_total", **labels) - value(before, "levqor_http_requests_total", **labels)
            == 1
        )
    timed = {"operation": "list_workflows", "status": "200"}
    count = "levqor_http_request_duration_seconds_count"
    assert value(after, count, **timed) - value(before, count, **timed) == 3
    assert value(after, "levqor_http_request_duration_seconds_sum", **timed) > 0
    assert value(after, "levqor_http_request_duration_seconds_bucket", **timed, le="+Inf") >= 3
    refusal = {"type": "monthly-quota-exceeded"}
    assert (
        value(after, "levqor_limit_refusals_total", **refusal) - value(before, "levqor_limit_refusals_total", **refusal)
        == 1
    )
    # Portal pages are counted under one bounded label.
    assert value(after, "levqor_http_requests_total", operation="metrics", method="GET", status="200") >= 1


def test_unknown_methods_share_one_label(client):
    """A client chooses the method; inventing them must not grow the label set."""
    before = scrape(client)
    for method in ("BREW", "PROPFIND-X1", "PROPFIND-X2"):
        client.request(method, "/api/health")
    after = scrape(client)
    methods = {dict(labels).get("method") for name, labels in after if name == "levqor_http_requests_total"}
    assert not methods & {"BREW", "PROPFIND-X1", "PROPFIND-X2"}
    other = {"operation": "api_other", "method": "other", "status": "405"}
    other_before = value(before, "levqor_http_requests_total", **other)
    assert value(after, "levqor_http_requests_total", **other) - other_before == 3


def test_metrics_show_jobs_by_state_and_queue_depth(app, client, make_account):
    _, raw = make_account(tier="pro")
    for _ in range(2):
        created = client.post("/api/v1/jobs", json={"workflow": "echo", "input": {"x": 1}}, headers={"x-api-key": raw})
        assert created.status_code == 202
    daily_stats.record_job_run(app.extensions["levqor.redis"], "notion-sync", "failed")
    samples = scrape(client)
    assert value(samples, "levqor_api_jobs", state="queued") == 2
    assert value(samples, "levqor_api_jobs", state="succeeded") == 0
    assert value(samples, "levqor_queue_depth", queue="levqor") == 2
    assert value(samples, "levqor_rq_jobs", queue="levqor", state="queued") == 2
    assert value(samples, "levqor_rq_jobs", queue="levqor", state="failed") == 0
    assert value(samples, "levqor_background_job_runs_total", job="notion-sync", outcome="failed") == 1


def test_metrics_can_require_a_bearer_token(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "METRICS_TOKEN", "scrape-secret")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200


def test_daily_stats_reach_redis_only_when_flushed(app, client):
    r = app.extensions["levqor.redis"]
    daily_stats.flush_daily_stats(r)
    key = daily_stats.day_key(datetime.now(UTC).date())
    r.delete(key)
    client.get("/api/health")
    assert r.hget(key, "requests") is None  # the request itself made no Redis write for stats
    assert daily_stats.flush_daily_stats(r) == 1
    assert daily_stats.day_stats(r, datetime.now(UTC).date())["requests"] == 1


def test_p95_interpolates_inside_the_bucket():
    buckets = [(0.01, 90), (0.1, 10), (float("inf"), 0)]
    assert daily_stats.quantile_ms(buckets, 0.95) == 55.0
    assert daily_stats.quantile_ms([(0.01, 0)], 0.95) is None


def test_multiprocess_mode_aggregates_every_worker_process(tmp_path):
    """Two processes write counters to PROMETHEUS_MULTIPROC_DIR; a third renders their sum."""
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    record = (
        "from levqor_core.ops import metrics\n"
        "metrics.REQUESTS.labels('get_usage', 'GET', '200').inc(5)\n"
        "metrics.REFUSALS.labels('burst-limit-exceeded').inc()\n"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", record], cwd=ROOT, env=env, check=True, timeout=60)
    render = (
        "import os\n"
        "from prometheus_client import CollectorRegistry, generate_latest, multiprocess\n"
        "registry = CollectorRegistry(); multiprocess.MultiProcessCollector(registry)\n"
        "print(generate_latest(registry).decode())\n"
    )
    out = subprocess.run([sys.executable, "-c", render], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    text = out.stdout
    assert 'levqor_http_requests_total{method="GET",operation="get_usage",status="200"} 10.0' in text
    assert 'levqor_limit_refusals_total{type="burst-limit-exceeded"} 2.0' in text
