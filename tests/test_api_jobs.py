"""The public v1 API: jobs executed by a real RQ worker, idempotency, pagination, isolation."""

import base64
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from .helpers import ROOT, run_worker_burst, worker_env


@pytest.fixture
def api(client, make_account):
    account_id, raw = make_account(tier="pro")

    def call(method, path, **kwargs):
        headers = kwargs.pop("headers", {}) | {"x-api-key": raw}
        return client.request(method, "/api" + path, headers=headers, **kwargs)

    call.account_id = account_id
    return call


def test_job_runs_on_a_real_rq_worker_and_succeeds(api, database_url, redis_server):
    created = api("POST", "/v1/jobs", json={"workflow": "text-stats", "input": {"text": "One two. Three four five."}})
    assert created.status_code == 202
    job = created.json()
    assert job["status"] == "queued" and job["id"].startswith("job_")
    assert created.headers["Location"] == f"/api/v1/jobs/{job['id']}"

    run_worker_burst(worker_env(database_url, redis_server.url))

    done = api("GET", f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded"
    assert done["result"]["words"] == 5 and done["result"]["sentences"] == 2
    assert done["started_at"] and done["finished_at"] >= done["started_at"]


def test_echo_result_is_its_input(api, database_url, redis_server):
    payload = {"message": "hello", "nested": {"n": [1, 2, 3]}}
    job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": payload}).json()
    run_worker_burst(worker_env(database_url, redis_server.url))
    assert api("GET", f"/v1/jobs/{job['id']}").json()["result"] == payload


@pytest.mark.parametrize("path", ["/v1/jobs", "/sandbox/v1/jobs"])
def test_idempotency_key_returns_same_job_and_rejects_a_different_body(api, path):
    body = {"workflow": "echo", "input": {"x": 1}}
    first = api("POST", path, json=body, headers={"Idempotency-Key": "abc-123"})
    again = api("POST", path, json=body, headers={"Idempotency-Key": "abc-123"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == first.json()
    other = api("POST", path, json={"workflow": "echo", "input": {"x": 2}}, headers={"Idempotency-Key": "abc-123"})
    assert other.status_code == 409
    # Production and sandbox refuse a reused key alike, as the spec's example says.
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert other.json()["detail"] == "This Idempotency-Key was used with a different request body; use a new key."


def test_concurrent_submissions_of_one_account_stop_exactly_at_its_cap(cx, app, make_account):
    """Forty submissions at once, for one account after another (Pro's cap is 10): each locks the
    account's row and counts its jobs in flight after the lock is held, so exactly the cap's worth
    are queued. A count that read the jobs as they stood before the lock was granted lets more
    through in most bursts."""
    from concurrent.futures import ThreadPoolExecutor

    from levqor_core.apijobs.models import Job
    from levqor_core.extensions import db
    from levqor_core.tiers import TIERS

    keys = dict(make_account(tier="pro") for _ in range(3))
    cap = TIERS["pro"].max_jobs_in_flight
    client = cx.test_client()
    assert client.get("/api/health").status_code == 200  # Connexion builds its stack on the first call

    def submit(account_and_i):
        account_id, i = account_and_i
        body = {"workflow": "echo", "input": {"i": i}}
        response = client.post("/api/v1/jobs", json=body, headers={"x-api-key": keys[account_id]})
        return account_id, response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = [
            answer for account_id in keys for answer in pool.map(submit, [(account_id, i) for i in range(cap + 30)])
        ]
    for account_id in keys:
        mine = [(status, body) for owner, status, body in answers if owner == account_id]
        statuses = [status for status, _ in mine]
        assert statuses.count(202) == cap and statuses.count(429) == 30, statuses
        refused = next(body for status, body in mine if status == 429)
        assert refused["type"].endswith("/too-many-jobs-in-flight") and refused["limit"] == cap
        with app.app_context():
            stored = db.session.scalars(sa.select(Job.id).where(Job.account_id == account_id)).all()
        assert sorted(stored) == sorted(body["id"] for status, body in mine if status == 202)


def test_concurrent_submissions_with_one_idempotency_key_make_one_job(cx, app, make_account):
    """Ten submissions at once with the same Idempotency-Key: the unique index lets one INSERT in;
    the others roll back and answer the job it made (200), none a 500 and none a second job."""
    from concurrent.futures import ThreadPoolExecutor

    from levqor_core.apijobs.models import Job
    from levqor_core.extensions import db

    account_id, raw = make_account(tier="pro")
    client = cx.test_client()
    assert client.get("/api/health").status_code == 200  # Connexion builds its stack on the first call
    headers = {"x-api-key": raw, "Idempotency-Key": "retry-of-one-submit"}

    def submit(_):
        response = client.post("/api/v1/jobs", json={"workflow": "echo", "input": {"once": True}}, headers=headers)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(submit, range(10)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 9 + [202], answers
    assert len({body["id"] for _, body in answers}) == 1
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).where(Job.account_id == account_id)) == 1


def test_a_submit_for_an_account_deleted_after_the_gate_is_a_401_not_a_500(app):
    """The gate admitted the key, then the account's deletion committed: the submit finds no
    account row to lock and says so, instead of breaking the jobs' foreign key (a 500)."""
    from levqor_core import problems
    from levqor_core.accounts.models import Account
    from levqor_core.apijobs import jobs as job_core
    from levqor_core.apijobs.models import Job
    from levqor_core.extensions import db

    with app.app_context():
        gone = (db.session.scalar(sa.select(sa.func.max(Account.id))) or 0) + 1000
        with pytest.raises(problems.NotAuthenticated, match="no longer exists"):
            job_core.create(gone, "echo", {"late": True})
        assert db.session.scalar(sa.select(sa.func.count()).where(Job.account_id == gone)) == 0


def test_invalid_input_for_the_workflow_is_a_400_with_errors(api):
    response = api("POST", "/v1/jobs", json={"workflow": "text-stats", "input": {"text": 5}})
    assert response.status_code == 400
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["type"].endswith("/invalid-job-input") and problem["errors"]


def test_unknown_workflow_is_a_400(api):
    response = api("POST", "/v1/jobs", json={"workflow": "no-such-thing", "input": {}})
    assert response.status_code == 400 and response.json()["type"].endswith("/unknown-workflow")


def test_list_is_newest_first_with_cursor_pagination_and_status_filter(api):
    ids = [api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"i": i}}).json()["id"] for i in range(5)]
    api("POST", f"/v1/jobs/{ids[0]}/cancel")
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api("GET", "/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == list(reversed(ids))
    canceled = api("GET", "/v1/jobs", params={"status": "canceled"}).json()["data"]
    assert [j["id"] for j in canceled] == [ids[0]]


def test_bad_cursor_and_bad_status_are_400(api):
    assert api("GET", "/v1/jobs", params={"cursor": "not-a-cursor"}).json()["type"].endswith("/invalid-cursor")
    # Well formed, but beyond the BIGINT column (it was a 500), zero, negative, or not ASCII digits.
    for seq in ("9" * 40, str(2**63), "0", "-5", "\u0663"):
        cursor = base64.urlsafe_b64encode(f"j{seq}".encode()).decode().rstrip("=")
        response = api("GET", "/v1/jobs", params={"cursor": cursor})
        assert response.status_code == 400 and response.json()["type"].endswith("/invalid-cursor"), seq
    assert api("GET", "/v1/jobs", params={"status": "exploded"}).status_code == 400


def test_cancel_queued_job_then_cancel_again_conflicts(api, database_url, redis_server):
    job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).json()
    canceled = api("POST", f"/v1/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    again = api("POST", f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["type"].endswith("/job-not-cancelable")
    run_worker_burst(worker_env(database_url, redis_server.url))  # the worker must leave a canceled job alone
    assert api("GET", f"/v1/jobs/{job['id']}").json()["status"] == "canceled"


def test_an_account_sees_only_its_own_jobs(api, client, make_account):
    job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).json()
    _, other_key = make_account()
    assert client.get(f"/api/v1/jobs/{job['id']}", headers={"x-api-key": other_key}).status_code == 404
    listed = client.get("/api/v1/jobs", headers={"x-api-key": other_key}).json()
    assert listed["data"] == []


def test_workflow_catalogue_has_schemas_and_known_ids(api):
    catalogue = api("GET", "/v1/workflows").json()["data"]
    ids = {w["id"] for w in catalogue}
    assert {"echo", "text-stats", "summarize", "json-transform", "delay"} <= ids
    assert all(w["input_schema"]["type"] == "object" for w in catalogue)
    one = api("GET", "/v1/workflows/summarize")
    assert one.status_code == 200 and one.json()["id"] == "summarize"
    assert api("GET", "/v1/workflows/missing").status_code == 404


def test_every_workflow_example_runs(api, database_url, redis_server):
    catalogue = api("GET", "/v1/workflows").json()["data"]
    jobs = {
        w["id"]: api("POST", "/v1/jobs", json={"workflow": w["id"], "input": w["example_input"]}).json()["id"]
        for w in catalogue
        if w["id"] != "delay"
    }
    run_worker_burst(worker_env(database_url, redis_server.url))
    for workflow_id, job_id in jobs.items():
        job = api("GET", f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", (workflow_id, job)
    summary = api("GET", f"/v1/jobs/{jobs['summarize']}").json()["result"]
    assert summary["sentences_kept"] == 1 and summary["summary"]
    transformed = api("GET", f"/v1/jobs/{jobs['json-transform']}").json()["result"]
    assert transformed == {"result": {"name": "Ada", "first_lang": "en"}}


# Inputs the workflow schemas accept that the workflows used to crash on (found by audit).
EDGE_INPUTS = {
    "text-stats": (
        {"text": "b c b", "top": 2.0},
        {"top_words": [{"word": "b", "count": 2}, {"word": "c", "count": 1}]},
    ),
    "summarize": ({"text": "One. Two.", "max_sentences": 1.0}, {"sentences_kept": 1}),
    "json-transform": (
        {"document": {"a": [10, 20]}, "mapping": {"x": "a.\u00b2", "y": "a.1"}},
        {"result": {"x": None, "y": 20}},
    ),
}


def test_inputs_at_the_edge_of_the_schemas_succeed_on_the_worker_and_in_the_sandbox(api, database_url, redis_server):
    created = {w: api("POST", "/v1/jobs", json={"workflow": w, "input": data}) for w, (data, _) in EDGE_INPUTS.items()}
    sandboxed = {
        w: api("POST", "/sandbox/v1/jobs", json={"workflow": w, "input": data}) for w, (data, _) in EDGE_INPUTS.items()
    }
    run_worker_burst(worker_env(database_url, redis_server.url))
    for workflow_id, (_, expected) in EDGE_INPUTS.items():
        for job in (api("GET", f"/v1/jobs/{created[workflow_id].json()['id']}").json(), sandboxed[workflow_id].json()):
            assert job["status"] == "succeeded", (workflow_id, job)
            assert job["result"] | expected == job["result"], (workflow_id, job["result"])
    delay = api("POST", "/sandbox/v1/jobs", json={"workflow": "delay", "input": {"seconds": 0.0}}).json()
    assert delay["status"] == "succeeded" and delay["result"] == {"slept_seconds": 0}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" * 5000])
@pytest.mark.parametrize("path", ["/v1/jobs", "/sandbox/v1/jobs"])
def test_numbers_json_cannot_carry_are_a_400_not_a_500(api, path, number):
    body = f'{{"workflow": "echo", "input": {{"n": {number}}}}}'
    response = api("POST", path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("/bad-request")
    assert api("GET", path.replace("/jobs", "/jobs?limit=1")).json()["data"] == []  # nothing was stored


def test_running_job_canceled_midway_keeps_canceled(api, app, database_url, redis_server):
    job = api("POST", "/v1/jobs", json={"workflow": "delay", "input": {"seconds": 2}}).json()
    env = worker_env(database_url, redis_server.url)
    worker = subprocess.Popen([sys.executable, "-m", "jobs.worker", "--burst"], cwd=ROOT, env=env)
    try:
        for _ in range(200):
            if api("GET", f"/v1/jobs/{job['id']}").json()["status"] == "running":
                break
            time.sleep(0.05)
        assert api("POST", f"/v1/jobs/{job['id']}/cancel").json()["status"] == "canceled"
    finally:
        assert worker.wait(timeout=60) == 0
    final = api("GET", f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "canceled" and final["result"] is None


def test_control_characters_in_the_path_are_a_400_not_a_500(api):
    # Found by the fuzz: Flask's router accepted what Connexion's refused, outside its context.
    response = api("GET", "/sandbox/v1/jobs/%C2%8D%0Aabc")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


def test_body_that_is_not_utf8_is_a_400(api):
    response = api("POST", "/v1/jobs", content=b"\xb1\xff", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["type"].endswith("/bad-request")


def test_job_created_while_redis_is_down_is_requeued_and_runs(api, app, database_url, redis_server):
    from datetime import UTC, datetime, timedelta

    from levqor_core.apijobs import jobs as job_core

    job = api("POST", "/v1/jobs", json={"workflow": "echo", "input": {"late": True}}).json()
    app.extensions["levqor.redis"].delete(f"rq:job:run-{job['id']}")  # as if Redis had lost it
    app.extensions["levqor.redis"].delete("rq:queue:levqor")
    with app.app_context():
        assert job_core.requeue_stranded(datetime.now(UTC)) == 0  # too recent to be called stranded
        assert job_core.requeue_stranded(datetime.now(UTC) + timedelta(minutes=3)) == 1
        assert job_core.requeue_stranded(datetime.now(UTC) + timedelta(minutes=3)) == 0  # now alive in RQ
    run_worker_burst(worker_env(database_url, redis_server.url))
    assert api("GET", f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


@pytest.mark.parametrize("path", ["/api/key/new", "/api/usage"])
def test_a_malformed_cookie_header_is_a_401_not_a_500(client, path):
    # Found by the fuzz: http.cookies raises on "$**", an attribute it does not know.
    response = client.request("POST" if path.endswith("/new") else "GET", path, headers={"Cookie": "session=x; $**=1"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/not-authenticated")
