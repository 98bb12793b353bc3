"""The local loop's streams (issue 23): a listening session's signed events and the request log as
Server-Sent Events, served from the event loop by the async host beside Flask, on a real uvicorn
server; per-account isolation, the per-tier stream limit, resuming with Last-Event-ID, and a
revoked key's stream ending at once. Every test runs on one Redis and with LIMITS_REDIS_URL on a
Redis Cluster (the streams' keys are on the limits Redis); the process reads all its streams on
one connection (one per primary on a cluster)."""

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.cluster
from rq import Queue
from standardwebhooks.webhooks import Webhook

from levqor_core import redis_conn
from levqor_core.accounts.models import Account
from levqor_core.apijobs import sandbox
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.queue import WEBHOOK_QUEUE
from levqor_core.streams import feed, live
from levqor_core.web import streams as stream_responses
from levqor_core.webhooks import listening

from . import both_backends
from .servers import served_in_thread

cx, app = both_backends.fixtures()  # every test on one Redis and on a Redis Cluster

REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")


@pytest.fixture
def base(cx, monkeypatch):
    """The app on a real uvicorn server, with short heartbeats and idle timeout; its base URL."""
    streams = cx.app.extensions[stream_responses.EXTENSION]
    monkeypatch.setattr(streams, "timing", live.Timing(heartbeat=0.5, idle=8))
    with served_in_thread(cx) as port:
        yield f"http://127.0.0.1:{port}"


class Stream:
    """An open SSE stream read event by event: (event, id, data)."""

    def __init__(self, base: str, route: str, key: str, last_event_id: str | None = None, **params):
        headers = {"x-api-key": key} | ({"Last-Event-ID": last_event_id} if last_event_id else {})
        self.client = httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=10))
        self.response = self.client.send(
            self.client.build_request("GET", route, headers=headers, params=params), stream=True
        )
        self.lines = self.response.iter_lines()

    def next(self, *wanted: str) -> tuple[str, str | None, dict]:
        """The next event of one of these kinds (any, when none named), skipping heartbeats."""
        event, event_id, data = None, None, []
        for line in self.lines:
            if line == "":
                if event and (not wanted or event in wanted):
                    return event, event_id, json.loads("\n".join(data))
                event, event_id, data = None, None, []
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
        raise AssertionError("the stream ended")

    def close(self):
        self.response.close()
        self.client.close()


def _trigger(base: str, key: str, event_type: str, sandbox: bool = True) -> dict:
    prefix = "/api/sandbox/v1" if sandbox else "/api/v1"
    answer = httpx.post(f"{base}{prefix}/events/trigger", json={"type": event_type}, headers={"x-api-key": key})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_a_listening_session_gets_each_event_signed_with_its_stable_secret(base, make_account, app):
    account_id, key = make_account()
    stream = Stream(base, "/api/sandbox/v1/events/stream", key, forward_to="http://localhost:3000/hooks")
    try:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert REQUEST_ID.match(stream.response.headers["request-id"])
        assert stream.response.headers["x-content-type-options"] == "nosniff"
        _, _, ready = stream.next("ready")
        assert ready["secret"] == listening.listening_secret("test-secret", account_id, sandbox=True)
        assert ready["secret"] != listening.listening_secret("test-secret", account_id, sandbox=False)
        with app.app_context():
            (session,) = listening.active_sessions(account_id, timedelta(minutes=1))
            assert session.url == "http://localhost:3000/hooks" and session.sandbox

        emitted = _trigger(base, key, "job.failed")
        _, _, delivered = stream.next("webhook")
        assert delivered["type"] == "job.failed"
        # The request an endpoint would get, verifiable with the secret `ready` gave.
        verified = Webhook(ready["secret"]).verify(delivered["body"], delivered["headers"])
        assert verified == emitted
        assert delivered["headers"]["webhook-id"] == delivered["webhook_id"]
    finally:
        stream.close()
    with app.app_context():
        _wait(lambda: not listening.active_sessions(account_id, timedelta(minutes=1)), "the session to end")


def _wait(predicate, what: str, timeout: float = 5):
    from .helpers import wait_for

    wait_for(predicate, timeout, step=0.1, what=what)


def test_events_filter_and_live_and_sandbox_are_kept_apart(base, make_account):
    _, key = make_account()
    stream = Stream(base, "/api/v1/events/stream", key, events="job.succeeded")
    try:
        stream.next("ready")
        _trigger(base, key, "job.succeeded", sandbox=True)  # the sandbox's: not on the live stream
        _trigger(base, key, "job.failed", sandbox=False)  # not asked for
        _trigger(base, key, "job.succeeded", sandbox=False)
        _, _, delivered = stream.next("webhook")
        assert delivered["type"] == "job.succeeded"
        assert json.loads(delivered["body"])["data"]["sandbox"] is False
    finally:
        stream.close()


def test_a_strangers_stream_sees_nothing_of_another_account(base, make_account):
    _, mine = make_account()
    _, strangers = make_account()
    events = Stream(base, "/api/sandbox/v1/events/stream", strangers)
    calls = Stream(base, "/api/v1/request_log/stream", strangers)
    try:
        events.next("ready")
        calls.next("ready")
        _trigger(base, mine, "job.succeeded")
        httpx.get(f"{base}/api/v1/jobs/job_00000000000000000000", headers={"x-api-key": mine})
        # The stranger's own event and call come first: nothing of the other account came before.
        own = _trigger(base, strangers, "key.rolled")
        answer = httpx.get(f"{base}/api/v1/jobs/job_11111111111111111111", headers={"x-api-key": strangers})
        _, _, delivered = events.next("webhook")
        assert json.loads(delivered["body"])["data"]["id"] == own["data"]["id"]
        seen = [calls.next("request")[2] for _ in range(2)]
        assert [c["path"] for c in seen] == ["/api/sandbox/v1/events/trigger", "/api/v1/jobs/job_11111111111111111111"]
        assert seen[1]["request_id"] == answer.headers["request-id"]
    finally:
        events.close()
        calls.close()


def test_logs_tail_shows_a_404_with_its_request_id_and_filters(base, make_account):
    _, key = make_account()
    stream = Stream(base, "/api/v1/request_log/stream", key, status="4xx", path="/api/v1/jobs")
    try:
        stream.next("ready")
        httpx.get(f"{base}/api/v1/workflows", headers={"x-api-key": key})  # a 200: filtered out
        missing = httpx.get(f"{base}/api/v1/jobs/job_00000000000000000000", headers={"x-api-key": key})
        assert missing.status_code == 404
        _, _, call = stream.next("request")
        assert call["request_id"] == missing.headers["request-id"]
        assert (call["method"], call["path"], call["status"]) == ("GET", "/api/v1/jobs/job_00000000000000000000", 404)
        assert call["problem_type"].endswith("/not-found") and "account_id" not in call
    finally:
        stream.close()


def test_a_dropped_stream_resumes_without_losing_an_event(base, make_account):
    _, key = make_account()
    stream = Stream(base, "/api/sandbox/v1/events/stream", key)
    first = _trigger(base, key, "job.succeeded")
    try:
        stream.next("ready")
        # (Triggered before `ready` was read but after the stream opened: it is on the stream.)
        _, last_id, delivered = stream.next("webhook")
        assert json.loads(delivered["body"])["data"]["id"] == first["data"]["id"]
    finally:
        stream.close()
    missed = [_trigger(base, key, kind)["data"]["id"] for kind in ("job.failed", "job.canceled")]
    resumed = Stream(base, "/api/sandbox/v1/events/stream", key, last_event_id=last_id)
    try:
        resumed.next("ready")
        got = [json.loads(resumed.next("webhook")[2]["body"])["data"]["id"] for _ in missed]
        assert got == missed
    finally:
        resumed.close()


def test_a_revoked_keys_stream_ends_at_once_saying_why(base, make_account):
    _, key = make_account()
    stream = Stream(base, "/api/v1/request_log/stream", key)
    try:
        stream.next("ready")
        assert httpx.delete(f"{base}/api/key", headers={"x-api-key": key}).status_code == 200
        event, _, data = stream.next("revoked", "end")
        assert event == "revoked" and data["reason"] == "key-revoked"
        with pytest.raises(AssertionError, match="ended"):
            stream.next()
    finally:
        stream.close()


def test_a_rolled_keys_streams_go_on_through_its_grace_period_and_end_with_it(base, make_account, app):
    account_id, old_key = make_account()
    opened_before = Stream(base, "/api/sandbox/v1/events/stream", old_key)
    opened_in_grace = None
    try:
        opened_before.next("ready")
        with app.app_context():
            keys.issue(db.session.get(Account, account_id), keys.Actor(email="test"), grace=timedelta(seconds=3))
        # In its grace period the old key still calls, and still opens, and both streams still carry
        # its account's events.
        opened_in_grace = Stream(base, "/api/sandbox/v1/events/stream", old_key)
        opened_in_grace.next("ready")
        sent = _trigger(base, old_key, "job.failed")["data"]["id"]
        for stream in (opened_before, opened_in_grace):
            assert json.loads(stream.next("webhook")[2]["body"])["data"]["id"] == sent
        # Then each ends when the key stops authenticating, saying why: the one opened before the
        # roll learnt the end from the control stream, the other when it opened.
        for stream in (opened_before, opened_in_grace):
            event, _, data = stream.next("revoked", "end")
            assert event == "revoked" and data["reason"] == "key-revoked" and "grace period has ended" in data["detail"]
            with pytest.raises(AssertionError, match="ended"):
                stream.next()
        refused = httpx.get(f"{base}/api/v1/workflows", headers={"x-api-key": old_key})
        assert refused.status_code == 401 and "grace period" in refused.json()["detail"]
    finally:
        opened_before.close()
        if opened_in_grace is not None:
            opened_in_grace.close()


def test_the_tiers_stream_limit_holds_and_a_closed_stream_frees_its_slot(base, make_account):
    _, key = make_account(tier="sandbox")
    opened = [Stream(base, "/api/v1/request_log/stream", key) for _ in range(3)]
    try:
        for stream in opened:
            stream.next("ready")
        refused = httpx.get(f"{base}/api/v1/request_log/stream", headers={"x-api-key": key})
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/stream-limit-reached") and refused.json()["limit"] == 3
        assert REQUEST_ID.match(refused.json()["request_id"])
        opened.pop().close()
        _wait(lambda: _opens(base, key), "a slot to be free again")
    finally:
        for stream in opened:
            stream.close()


def _opens(base: str, key: str) -> bool:
    stream = Stream(base, "/api/v1/request_log/stream", key)
    try:
        return stream.response.status_code == 200
    finally:
        stream.close()


def test_streams_refuse_a_bad_key_a_bad_resume_id_and_an_unknown_event_type(base, make_account):
    _, key = make_account()
    assert httpx.get(f"{base}/api/v1/events/stream").status_code == 401
    bad_id = httpx.get(f"{base}/api/v1/events/stream", headers={"x-api-key": key, "Last-Event-ID": "1-2-3"})
    assert bad_id.status_code == 400 and bad_id.json()["type"].endswith("/invalid-last-event-id")
    unknown = httpx.get(f"{base}/api/v1/events/stream", params={"events": "job.exploded"}, headers={"x-api-key": key})
    assert unknown.status_code == 400 and "job.exploded" in unknown.json()["detail"]
    assert httpx.post(f"{base}/api/v1/events/stream", headers={"x-api-key": key}).status_code == 405
    head = httpx.head(f"{base}/api/v1/request_log/stream", headers={"x-api-key": key})
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")


def test_an_idle_stream_ends_so_the_client_reconnects(cx, make_account, monkeypatch):
    streams = cx.app.extensions[stream_responses.EXTENSION]
    monkeypatch.setattr(streams, "timing", live.Timing(heartbeat=0.2, idle=0.5))
    with served_in_thread(cx) as port:
        _, key = make_account()
        stream = Stream(f"http://127.0.0.1:{port}", "/api/v1/request_log/stream", key)
        try:
            stream.next("ready")
            event, _, data = stream.next("end")
            assert data["reason"] == "idle"
        finally:
            stream.close()


def test_the_served_spec_documents_the_streams(client):
    spec = client.get("/api/openapi.json").json()
    for path in ("/v1/events/stream", "/sandbox/v1/events/stream", "/v1/request_log/stream"):
        assert "text/event-stream" in spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert "x-levqor-host" not in spec["paths"][path]["get"]


def test_the_webhooks_page_lists_open_listening_sessions_only(base, portal, cx):
    dev = portal().sign_up()
    key = dev.new_key().json()["key"]
    page = dev.client.get("/developer/webhooks", headers={"HX-Request": "true", "HX-Target": "webhook-listening"})
    assert page.status_code == 200 and "No listening session open." in page.text
    stream = Stream(
        base, "/api/sandbox/v1/events/stream", key, forward_to="http://localhost:3000/hooks", events="job.failed"
    )
    try:
        stream.next("ready")
        whole = dev.client.get("/developer/webhooks").text
        assert 'id="webhook-listening"' in whole and "<code>http://localhost:3000/hooks</code>" in whole
        assert "<code>job.failed</code>" in whole and ">sandbox<" in whole
    finally:
        stream.close()

    def gone():
        fragment = dev.client.get(
            "/developer/webhooks", headers={"HX-Request": "true", "HX-Target": "webhook-listening"}
        )
        return "No listening session open." in fragment.text

    _wait(gone, "the session to leave the page")


def _limits_clients(app) -> list[dict]:
    """The connections the limits Redis has (every primary's, on a cluster)."""
    r = app.extensions["levqor.limits_redis"]
    if isinstance(r, redis.cluster.RedisCluster):
        return [c for node in r.get_primaries() for c in r.client_list(target_nodes=node)]
    return r.client_list()


def _readers(app) -> list[dict]:
    """The streams' readers: the connections whose last command is a stream read (or the client id
    a reader asks for before each read, so that a new stream can wake it)."""
    return [c for c in _limits_clients(app) if c["cmd"] in ("xread", "client|id")]


def test_the_streams_keys_are_on_the_limits_redis_not_on_redis_url(base, make_account, app):
    limits, queues = app.extensions["levqor.limits_redis"], app.extensions["levqor.redis"]
    if limits is queues:
        pytest.skip("one Redis holds both roles: the cluster run checks where the keys are")
    account_id, key = make_account()
    events = Stream(base, "/api/sandbox/v1/events/stream", key)
    calls = Stream(base, "/api/v1/request_log/stream", key)
    try:
        events.next("ready")
        calls.next("ready")
        _trigger(base, key, "job.succeeded")
        events.next("webhook")
        calls.next("request")
        assert limits.exists(feed.events_key(account_id, True), feed.log_key(account_id)) == 2
        assert limits.zcard(feed.slots_key(account_id)) == 2
        assert httpx.delete(f"{base}/api/key", headers={"x-api-key": key}).status_code == 200
        assert events.next("revoked", "end")[0] == "revoked"
        assert limits.exists(feed.control_key(account_id)) == 1
    finally:
        events.close()
        calls.close()
    assert [k for k in queues.scan_iter("lvq:{a*")] == []


def test_one_connection_reads_every_stream_of_the_process(base, make_account, app):
    accounts = [make_account(tier="enterprise") for _ in range(2)]
    first = Stream(base, "/api/v1/request_log/stream", accounts[0][1])  # the reader and command client exist
    opened = [first]
    try:
        first.next("ready")
        before = len(_limits_clients(app))
        for n in range(20):
            opened.append(Stream(base, "/api/sandbox/v1/events/stream", accounts[n % 2][1]))
            opened[-1].next("ready")
        # One reader per Redis (per primary holding the accounts' keys on a cluster), not one per
        # stream; the few command connections the streams share are all the rest.
        readers_per_server = Counter(c["laddr"] for c in _readers(app))
        assert set(readers_per_server.values()) == {1} and sum(readers_per_server.values()) <= len(accounts)
        assert len(_limits_clients(app)) - before < 10
        sent = [_trigger(base, key, "job.failed")["data"]["id"] for _, key in accounts]
        for n, stream in enumerate(opened[1:]):  # each stream gets its own account's event only
            assert json.loads(stream.next("webhook")[2]["body"])["data"]["id"] == sent[n % 2]
    finally:
        for stream in opened:
            stream.close()
    _wait(lambda: _readers(app) == [], "the reader to close its connection with the last stream gone")


def test_a_stream_resuming_behind_a_live_one_gets_what_it_missed_from_the_shared_read(base, make_account):
    _, key = make_account()
    live_one = Stream(base, "/api/sandbox/v1/events/stream", key)
    try:
        live_one.next("ready")
        sent = [_trigger(base, key, kind)["data"]["id"] for kind in ("job.succeeded", "job.failed")]
        first_id = live_one.next("webhook")[1]
        live_one.next("webhook")
        # Read by the same reader from the older of the two cursors; each gets what is after its own.
        resumed = Stream(base, "/api/sandbox/v1/events/stream", key, last_event_id=first_id)
        try:
            resumed.next("ready")
            assert json.loads(resumed.next("webhook")[2]["body"])["data"]["id"] == sent[1]
            later = _trigger(base, key, "job.canceled")["data"]["id"]
            for stream in (live_one, resumed):
                assert json.loads(stream.next("webhook")[2]["body"])["data"]["id"] == later
        finally:
            resumed.close()
    finally:
        live_one.close()


def test_a_sandbox_delay_jobs_end_is_streamed_when_it_comes_once_and_not_if_canceled(base, make_account, app):
    """`levqor listen --sandbox` sees a delay job end as an endpoint does: at its end, scheduled on
    the webhook queue's workers (the Procfile worker runs it: tests/test_cli.py)."""
    account_id, key = make_account()
    stream = Stream(base, "/api/sandbox/v1/events/stream", key)
    api = httpx.Client(base_url=base, headers={"x-api-key": key}, timeout=10)
    try:
        stream.next("ready")
        delay = {"workflow": "delay", "input": {"seconds": 2}}
        job = api.post("/api/sandbox/v1/jobs", json=delay).json()
        canceled = api.post("/api/sandbox/v1/jobs", json=delay).json()
        assert job["status"] == canceled["status"] == "running"
        assert api.post(f"/api/sandbox/v1/jobs/{canceled['id']}/cancel").status_code == 200
        _, _, first = stream.next("webhook")  # nothing of `job` before its end: the cancel's event
        assert first["type"] == "job.canceled" and json.loads(first["body"])["data"]["id"] == canceled["id"]

        # Each delay job's end is scheduled on the webhook queue, for the second it comes (rounded up).
        scheduled = Queue(WEBHOOK_QUEUE, connection=app.extensions["levqor.redis"]).scheduled_job_registry
        tasks = {}
        for rq_id in scheduled.get_job_ids():
            rq_job = scheduled.job_class.fetch(rq_id, connection=scheduled.connection)
            if rq_job.func_name == sandbox.STREAM_END_TASK and rq_job.args[0] == account_id:
                tasks[rq_job.args[1]] = scheduled.get_scheduled_time(rq_job)
        assert set(tasks) == {job["id"], canceled["id"]}
        with app.app_context():
            r = redis_conn.for_limits()
            assert sandbox.stream_end(r, account_id, job["id"]) is False  # not before its end
            due = max(tasks.values()).replace(tzinfo=UTC)
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            assert sandbox.stream_end(r, account_id, canceled["id"]) is False  # canceled before its end
            assert sandbox.stream_end(r, account_id, job["id"]) is True
            assert sandbox.stream_end(r, account_id, job["id"]) is False  # an RQ job run again
        _, _, ended = stream.next("webhook")
        body = json.loads(ended["body"])
        assert (body["type"], body["data"]["id"], body["data"]["status"]) == ("job.succeeded", job["id"], "succeeded")
        assert body["data"]["result"] == {"slept_seconds": 2}
        # Dated at the job's end, as its deliveries to endpoints are.
        assert body["timestamp"] == api.get(f"/api/sandbox/v1/jobs/{job['id']}").json()["finished_at"]
    finally:
        api.close()
        stream.close()
