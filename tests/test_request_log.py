"""The request log (issue 14): a Request-Id on every response and problem, each account's API
calls recorded off the hot path, /developer/logs showing only the signed-in account's calls,
and storage bounded by the 7-day window and the per-account cap."""

import html
import json
import logging
import re
import subprocess
import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest
import redis
import sqlalchemy as sa

from levqor_core import tiers
from levqor_core.accounts.models import Account
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.limits import gate as gate_module
from levqor_core.requestlog import queries
from levqor_core.requestlog import recorder as request_log
from levqor_core.requestlog.models import RequestLogEntry
from levqor_core.web.request_guard import with_request_id

from . import helpers as shipped
from . import signup
from .helpers import seed_usage
from .servers import free_port

HX = {"HX-Request": "true"}
REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")


@pytest.fixture
def recorder(app):
    """The app's recorder, emptied of what earlier tests buffered (their accounts' ids are reused
    after the tables are truncated), and its table empty."""
    rec = app.extensions["levqor.request_log"]
    rec.clear()
    with app.app_context():
        db.session.execute(sa.delete(RequestLogEntry))
        db.session.commit()
    return rec


@pytest.fixture
def developer(portal, recorder):
    """A signed-up developer with a key: (portal session, raw key)."""
    dev = portal().sign_up()
    created = dev.new_key()
    assert created.status_code == 201
    return dev, created.json()["key"]


def log_page(dev, **params) -> str:
    response = dev.client.get("/developer/logs", params=params)
    assert response.status_code == 200
    return response.text


def rows(page: str) -> list[tuple[str, str, str]]:
    """(request id, status, path) of each row shown."""
    found = []
    for row in re.findall(r'<tr class="log-row">.*?</tr>', page, re.S):
        status = re.search(r'class="badge [^"]*"[^>]*>(\d+)<', row).group(1)
        path = re.search(r'class="c-path"><code>([^<]*)</code>', row).group(1)
        request_id = re.search(r"<code[^>]*>(req_[0-9a-f]{24})</code>", row).group(1)
        found.append((request_id, status, html.unescape(path)))
    return found


def a_call(at: float, account_id: int, request_id: str) -> tuple:
    """A successful call as the middleware hands it to the recorder."""
    return request_log.entry(at, account_id, None, request_id, "GET", "/api/v1/x", b"", 200, 0.01, None, None)


# ---- Request-Id -------------------------------------------------------------------------------


def test_every_response_has_a_fresh_request_id_and_a_client_sent_one_is_not_taken(client):
    seen = set()
    for path in ("/api/health", "/developer", "/api/v1/workflows", "/api/nope", "/nope"):
        response = client.get(path, headers={"X-Request-Id": "req_000000000000000000000000"})
        assert REQUEST_ID.match(response.headers["Request-Id"]), path
        seen.add(response.headers["Request-Id"])
    assert len(seen) == 5 and "req_000000000000000000000000" not in seen


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, key: c.get("/api/v1/workflows"), id="401-connexion-security"),
        pytest.param(lambda c, key: c.get("/api/v1/jobs/job_nope", headers={"x-api-key": key}), id="404-problem"),
        pytest.param(lambda c, key: c.get("/api/nowhere"), id="404-routing"),
        pytest.param(
            lambda c, key: c.post("/api/v1/jobs", json={"workflow": "echo"}, headers={"x-api-key": key}),
            id="400-validation",
        ),
        pytest.param(
            lambda c, key: c.post(
                "/api/v1/jobs", content=b"{}", headers={"x-api-key": key, "Content-Length": "99999999"}
            ),
            id="413-middleware",
        ),
        pytest.param(
            lambda c, key: c.post("/api/v1/jobs", json=json.loads("[" * 40 + "]" * 40), headers={"x-api-key": key}),
            id="400-middleware-nesting",
        ),
        pytest.param(lambda c, key: c.get("/api/key"), id="401-session-required"),
    ],
)
def test_every_problem_body_carries_the_request_id_of_its_header(client, make_account, call):
    _, key = make_account()
    response = call(client, key)
    assert response.status_code >= 400
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["request_id"] == response.headers["Request-Id"]
    assert REQUEST_ID.match(body["request_id"])
    assert int(response.headers["content-length"]) == len(response.content)


def test_429_problems_carry_the_request_id(client, make_account, app):
    account_id, key = make_account()
    seed_usage(app, account_id, calls=tiers.get("sandbox").monthly_quota)  # refused however slow the machine
    refused = client.get("/api/v1/workflows", headers={"x-api-key": key})
    assert refused.status_code == 429
    assert refused.json()["request_id"] == refused.headers["Request-Id"]
    assert refused.headers["Retry-After"]


def test_the_access_log_line_gets_the_request_id_under_gunicorns_and_uvicorns_own_formatter():
    """gunicorn (the Procfile) prints the message; uvicorn alone (make run) formats the line from
    exactly five arguments, and raised "too many values to unpack" on each request when the id was
    a sixth."""
    from uvicorn.logging import AccessFormatter

    from levqor_core.web.request_log import CURRENT, AccessLogRequestId

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", "/x", "1.1", 200),
        None,
    )
    token = CURRENT.set("req_0123456789abcdef01234567")
    try:
        assert AccessLogRequestId().filter(record)
    finally:
        CURRENT.reset(token)
    assert record.getMessage() == '127.0.0.1:1 - "GET /x HTTP/1.1" 200 request_id=req_0123456789abcdef01234567'
    assert '"GET /x HTTP/1.1" 200' in AccessFormatter().format(record)


def test_request_id_is_spliced_into_any_problem_object():
    rid = "req_" + "a" * 24
    assert json.loads(with_request_id(b'{"type":"x","status":400}', rid)) == {
        "type": "x",
        "status": 400,
        "request_id": rid,
    }
    assert json.loads(with_request_id(b'{\n  "a": 1\n}\n', rid)) == {"a": 1, "request_id": rid}
    assert json.loads(with_request_id(b"{}", rid)) == {"request_id": rid}
    assert with_request_id(b"not json", rid) == b"not json"


# ---- what is recorded ---------------------------------------------------------------------------


def test_a_200_a_404_a_400_and_a_429_appear_in_the_developers_log_with_their_statuses(cx, app, developer, recorder):
    dev, key = developer
    with app.app_context():
        account_id = db.session.scalar(sa.select(Account.id).where(Account.email == dev.email))
    seed_usage(app, account_id, sandbox_calls=100)  # the day's sandbox calls spent: a 429 however slow the machine
    api = cx.test_client()
    ok = api.get("/api/v1/jobs", params={"limit": "5"}, headers={"x-api-key": key})
    missing = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293", headers={"x-api-key": key})
    invalid = api.post("/api/v1/jobs", json={"workflow": "echo", "oops": True}, headers={"x-api-key": key})
    limited = api.get("/api/sandbox/v1/workflows", headers={"x-api-key": key})
    assert limited.status_code == 429
    assert (ok.status_code, missing.status_code, invalid.status_code) == (200, 404, 400)
    # Written now, by this flush or by the recorder's own thread (every REQUEST_LOG_FLUSH_SECONDS) if
    # the machine was slow enough for it to run first: the page below shows each call either way.
    recorder.flush()

    shown = rows(log_page(dev))
    by_id = {request_id: (status, path) for request_id, status, path in shown}
    assert by_id[ok.headers["Request-Id"]] == ("200", "/api/v1/jobs")
    assert by_id[missing.headers["Request-Id"]] == ("404", "/api/v1/jobs/job_0a1b2c3d4e5f60718293")
    assert by_id[invalid.headers["Request-Id"]] == ("400", "/api/v1/jobs")
    assert by_id[limited.headers["Request-Id"]] == ("429", "/api/sandbox/v1/workflows")
    # The portal session's own API call (creating the key) is this account's too.
    assert any(path == "/api/key/new" and status == "201" for _, status, path in shown)

    # The detail: the query, and for the error the body sent and the problem returned, never the key.
    detail = dev.client.get(
        f"/developer/logs/{invalid.headers['Request-Id']}", headers={**HX, "HX-Target": "log-detail"}
    )
    assert detail.status_code == 200 and 'id="log-detail"' in detail.text and "<html" not in detail.text
    text = html.unescape(detail.text)
    assert '"oops": true' in text or '"oops":true' in text
    assert invalid.headers["Request-Id"] in text and "bad-request" in text
    assert key not in text
    detail_ok = html.unescape(dev.client.get(f"/developer/logs/{ok.headers['Request-Id']}").text)
    assert "?limit=5" in detail_ok and "live" in detail_ok


def test_a_401_for_a_rotated_key_past_its_grace_period_is_in_its_accounts_log(
    app, cx, developer, recorder, monkeypatch
):
    dev, old_key = developer
    api = cx.test_client()
    assert api.get("/api/v1/workflows", headers={"x-api-key": old_key}).status_code == 200  # cached
    with app.app_context():  # rolled with a grace period (the portal allows one creation a day)
        account = db.session.scalar(sa.select(Account).where(Account.email == dev.email))
        keys.issue(account, keys.Actor(email="test"), grace=timedelta(seconds=60))
    assert api.get("/api/v1/workflows", headers={"x-api-key": old_key}).status_code == 200  # in its grace
    later = time.time() + 120  # the grace period is over
    monkeypatch.setattr(gate_module.time, "time", lambda: later)
    refused = api.get("/api/v1/workflows", headers={"x-api-key": old_key})
    assert refused.status_code == 401 and "grace period" in refused.json()["detail"]
    stranger = api.get("/api/v1/workflows", headers={"x-api-key": "lvq_" + "0" * 32 + "_AAAAAA"})
    assert stranger.status_code == 401
    recorder.flush()  # or its own thread did: the page below shows the call either way
    by_id = {request_id: status for request_id, status, _ in rows(log_page(dev))}
    assert by_id[refused.headers["Request-Id"]] == "401"
    assert stranger.headers["Request-Id"] not in by_id  # an unknown key's call is no one's


def test_another_accounts_calls_never_appear_in_the_list_the_filters_or_the_detail(cx, portal, developer, recorder):
    dev, key = developer
    other = portal().sign_up()
    other_key = other.new_key().json()["key"]
    api = cx.test_client()
    mine = api.get("/api/v1/workflows", headers={"x-api-key": key})
    theirs = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293", headers={"x-api-key": other_key})
    recorder.flush()

    ids = {request_id for request_id, _, _ in rows(log_page(dev))}
    assert mine.headers["Request-Id"] in ids and theirs.headers["Request-Id"] not in ids
    assert rows(log_page(dev, request_id=theirs.headers["Request-Id"])) == []
    assert dev.client.get(f"/developer/logs/{theirs.headers['Request-Id']}").status_code == 404
    assert theirs.headers["Request-Id"] in {r for r, _, _ in rows(log_page(other))}


def test_anonymous_calls_and_health_checks_are_recorded_for_no_one(cx, app, developer, recorder):
    dev, _ = developer
    recorder.flush()
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(RequestLogEntry))
    api = cx.test_client()
    api.get("/api/health")
    api.get("/api/v1/workflows", headers={"x-api-key": "lvq_" + "0" * 32 + "_AAAAAA"})  # unknown key: 401
    api.get("/api/v1/workflows")
    dev.client.get("/developer/api-keys")  # a portal page, not an API call
    recorder.flush()
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RequestLogEntry)) == before


def test_filters_by_status_class_path_prefix_and_request_id(cx, developer, recorder):
    dev, key = developer
    api = cx.test_client()
    ok = api.get("/api/v1/workflows", headers={"x-api-key": key})
    missing = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293", headers={"x-api-key": key})
    sandbox = api.get("/api/sandbox/v1/workflows", headers={"x-api-key": key})
    recorder.flush()

    assert {r for r, _, _ in rows(log_page(dev, status="4xx"))} == {missing.headers["Request-Id"]}
    two_xx = {r for r, _, _ in rows(log_page(dev, status="2xx"))}
    assert {ok.headers["Request-Id"], sandbox.headers["Request-Id"]} <= two_xx
    assert missing.headers["Request-Id"] not in two_xx
    assert {r for r, _, _ in rows(log_page(dev, path="/api/sandbox/"))} == {sandbox.headers["Request-Id"]}
    assert {r for r, _, _ in rows(log_page(dev, path="/api/v1/w%"))} == set()  # a prefix, not a pattern
    assert [r for r, _, _ in rows(log_page(dev, request_id=ok.headers["Request-Id"]))] == [ok.headers["Request-Id"]]
    # The filter form swaps only the table.
    fragment = dev.client.get("/developer/logs", params={"status": "4xx"}, headers={**HX, "HX-Target": "request-log"})
    assert fragment.text.lstrip().startswith('<section id="request-log"')


def test_the_log_pages_newest_first_with_load_more(app, cx, developer, recorder, monkeypatch):
    dev, key = developer
    monkeypatch.setattr(queries, "PAGE_SIZE", 3)
    api = cx.test_client()
    sent = [api.get("/api/v1/workflows", headers={"x-api-key": key}).headers["Request-Id"] for _ in range(7)]
    recorder.flush()

    first = log_page(dev, path="/api/v1/")
    assert [r for r, _, _ in rows(first)] == sent[::-1][:3]
    more = re.search(r'hx-get="([^"]*/developer/logs/more[^"]*)"', first).group(1)
    second = dev.client.get(html.unescape(more), headers={**HX, "HX-Target": "log-more"})
    assert second.status_code == 200 and "<html" not in second.text
    assert second.text.lstrip().startswith("<tbody id=") and '<tfoot id="log-more" hx-swap-oob="true">' in second.text
    assert [r for r, _, _ in rows(second.text)] == sent[::-1][3:6]
    more = re.search(r'hx-get="([^"]*/developer/logs/more[^"]*)"', second.text).group(1)
    third = dev.client.get(html.unescape(more), headers={**HX, "HX-Target": "log-more"}).text
    assert [r for r, _, _ in rows(third)] == sent[::-1][6:]
    assert "Load more" not in third
    # Without htmx, "Load more" is a link to the page from there.
    link = re.search(r'href="([^"]*/developer/logs\?cursor=[^"]*)"', first).group(1)
    assert [r for r, _, _ in rows(dev.client.get(html.unescape(link)).text)] == sent[::-1][3:6]


def test_the_log_page_needs_a_session_and_has_a_readable_empty_state(client, portal, recorder):
    assert client.get("/developer/logs").status_code == 302
    assert client.get("/developer/logs", headers=HX).headers.get("HX-Redirect", "").startswith("/login")
    page = log_page(portal().sign_up())
    assert "No API calls in the last 7 days yet" in page
    assert 'href="/developer/logs"' in page  # in the navigation


def test_what_is_stored_bodies_and_answers_truncated_and_no_key(app, cx, developer, recorder):
    dev, key = developer
    api = cx.test_client()
    body = {"workflow": "echo", "input": {"note": "x" * 20_000, "leaked": key}, "extra": 1}
    failed = api.post("/api/v1/jobs", json=body, headers={"x-api-key": key})
    ok = api.get("/api/v1/workflows", headers={"x-api-key": key})
    leak = api.get("/api/v1/workflows", params={"k": key}, headers={"x-api-key": key})  # 400: unknown parameter
    assert failed.status_code == 400 and ok.status_code == 200 and leak.status_code == 400
    recorder.flush()
    with app.app_context():
        stored = {e.request_id: e for e in db.session.scalars(sa.select(RequestLogEntry))}
        error, success = stored[failed.headers["Request-Id"]], stored[ok.headers["Request-Id"]]
        assert error.status == 400 and error.problem_type.endswith("/bad-request")
        assert len(error.request_body) <= request_log.MAX_BODY_CHARS + 1 and error.request_body.startswith(
            '{"workflow"'
        )
        assert json.loads(error.response_body)["request_id"] == failed.headers["Request-Id"]
        assert error.key_id and not error.sandbox and error.latency_ms > 0
        # A successful call keeps what the API answered too (a GET sends no body).
        assert success.request_body is None and success.problem_type is None
        assert json.loads(success.response_body) == ok.json()
        leaked = stored[leak.headers["Request-Id"]]
        assert key not in leaked.query and "redacted" in leaked.query
        for entry in stored.values():
            assert key not in " ".join(str(v) for v in vars(entry).values())


def test_a_successful_call_keeps_its_bodies_but_never_an_answer_that_carried_a_secret(
    app, cx, developer, recorder, monkeypatch
):
    dev, key = developer
    api = cx.test_client()
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", True)  # no DNS here: a loopback target
    created = api.post("/api/sandbox/v1/jobs", json={"workflow": "echo", "input": {"a": 1}}, headers={"x-api-key": key})
    endpoint = api.post(
        "/api/sandbox/v1/webhook_endpoints",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["job.succeeded"]},
        headers={"x-api-key": key},
    )
    assert created.status_code == 202 and endpoint.status_code == 201 and endpoint.json()["secret"].startswith("whsec_")
    recorder.flush()
    with app.app_context():
        stored = {e.request_id: e for e in db.session.scalars(sa.select(RequestLogEntry))}
    job = stored[created.headers["Request-Id"]]
    assert json.loads(job.request_body) == {"workflow": "echo", "input": {"a": 1}}
    assert json.loads(job.response_body)["id"] == created.json()["id"]
    # The signing secret is shown once, in that answer (Cache-Control: no-store), and stored nowhere.
    hook = stored[endpoint.headers["Request-Id"]]
    assert hook.status == 201 and hook.response_body is None
    assert endpoint.json()["secret"] not in " ".join(str(v) for v in vars(hook).values())
    detail = dev.client.get(f"/developer/logs/{created.headers['Request-Id']}").text
    assert "Response body" in detail and created.json()["id"] in detail


def test_recording_a_call_touches_no_database_on_the_request_path(app, cx, make_account, recorder, monkeypatch):
    """The counting test in test_limits watches the app's engine; the log has its own, so this
    proves that only the flush thread (or an explicit flush) ever opens it."""
    account_id, key = make_account(tier="enterprise")
    callers = []
    real_engine = recorder.engine

    def watched_engine():
        callers.append(threading.current_thread().name)
        return real_engine()

    monkeypatch.setattr(recorder, "engine", watched_engine)
    with cx.test_client() as api:
        for _ in range(5):
            assert api.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    assert set(callers) <= {"request-log-flush"}
    recorder.flush()
    with app.app_context():
        where = RequestLogEntry.account_id == account_id
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RequestLogEntry).where(where)) == 5


def test_the_buffer_is_bounded_and_keeps_calls_while_the_database_is_away(app):
    rec = request_log.Recorder("postgresql+psycopg://nobody@127.0.0.1:1/none", flush_seconds=0, max_buffered=5)
    for n in range(8):
        rec.add(a_call(0.0, 1, f"req_{n}"))
    assert [c[3] for c in rec.buffer] == ["req_3", "req_4", "req_5", "req_6", "req_7"] and rec.dropped == 3
    with pytest.raises(sa.exc.OperationalError):
        rec.flush()
    assert len(rec.buffer) == 5  # put back for the next flush


def test_a_nul_in_a_body_is_logged_and_holds_up_no_ones_calls(app, cx, developer, recorder):
    """PostgreSQL's text refuses NUL: written as it came, such a call failed every flush, first in
    the buffer, and nobody's calls were logged again (the stateful fuzz run found it). (A NUL in the
    path is refused by the request guard before any account is known, so it is not logged.)"""
    dev, key = developer
    dropped = recorder.dropped
    api = cx.test_client()
    in_body = api.post(
        "/api/v1/jobs", content=b'{"workflow": "echo\x00", "input": 1}', headers={"x-api-key": key, **JSON_BODY}
    )
    after = api.get("/api/v1/workflows", headers={"x-api-key": key})
    assert in_body.status_code == 400 and after.status_code == 200
    assert recorder.flush() >= 2 and recorder.dropped == dropped
    with app.app_context():
        stored = {e.request_id: e for e in db.session.scalars(sa.select(RequestLogEntry))}
    assert "echo\ufffd" in stored[in_body.headers["Request-Id"]].request_body
    assert after.headers["Request-Id"] in stored


JSON_BODY = {"content-type": "application/json"}


def test_a_call_the_database_refuses_is_dropped_and_the_rest_are_written(app, make_account, recorder):
    account_id, _ = make_account()
    dropped = recorder.dropped
    recorder.add(a_call(time.time(), account_id, "req_before"))
    recorder.add(a_call(time.time(), 2**40, "req_out_of_range"))  # no integer column holds it
    recorder.add(a_call(time.time(), account_id, "req_after"))
    assert recorder.flush() == 2 and recorder.dropped == dropped + 1 and not recorder.buffer
    with app.app_context():
        written = set(db.session.scalars(sa.select(RequestLogEntry.request_id)))
    assert written == {"req_before", "req_after"}


# ---- retention ----------------------------------------------------------------------------------


def _add_rows(account: int, at, n: int) -> None:
    db.session.execute(
        sa.insert(RequestLogEntry),
        [request_log.row(a_call(at.timestamp(), account, f"req_{account}_{at.timestamp()}_{i}")) for i in range(n)],
    )


def test_purge_deletes_what_left_the_7_day_window_through_its_index(app, make_account, recorder):
    (a, _), (b, _) = make_account(with_key=False), make_account(with_key=False)
    now = utcnow()
    with app.app_context():
        _add_rows(a, now - timedelta(days=8), 3)  # outside the window
        _add_rows(a, now - timedelta(days=6), 4)
        _add_rows(b, now - timedelta(hours=2), 5)
        db.session.commit()
        assert queries.purge(now) == 3
        assert queries.purge(now) == 0
        assert queries.purge(now + timedelta(days=7, seconds=1)) == 9  # a week later, nothing is left
        # The delete can walk the index on `at` (its cost follows what expires, not the table): with
        # a table this small the planner prefers a scan unless told not to.
        db.session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            db.session.execute(sa.text("EXPLAIN DELETE FROM request_log WHERE at < :t"), {"t": now}).scalars()
        )
        db.session.rollback()
    assert "ix_request_log_at" in plan, plan


def test_the_periodic_trim_cuts_only_the_accounts_written_for_to_their_cap(app, make_account, recorder):
    (busy, _), (quiet, _), (untouched, _) = (make_account(with_key=False) for _ in range(3))
    r = app.extensions["levqor.redis"]
    # Two recorders, as two web processes: both name the busy account, which is trimmed once.
    first, second = (
        request_log.Recorder(app.config["SQLALCHEMY_DATABASE_URI"], flush_seconds=0, redis_client=r) for _ in range(2)
    )
    start = time.time()
    for i in range(8):
        (first if i % 2 else second).add(a_call(start + i, busy, f"req_{i}"))
    for i in range(3):
        first.add(a_call(start + i, quiet, f"req_q{i}"))
    assert first.flush() + second.flush() == 11
    with app.app_context():
        _add_rows(untouched, utcnow(), 7)  # over the cap, but written by nobody since: left alone
        db.session.commit()
        assert queries.trim_written(r, cap=5) == 3
        assert queries.trim_written(r, cap=5) == 0  # nothing written since
        kept = db.session.execute(sa.select(RequestLogEntry.account_id, RequestLogEntry.request_id)).all()
    assert sorted(rid for a, rid in kept if a == busy) == [f"req_{i}" for i in range(3, 8)]
    assert sum(1 for a, _ in kept if a == quiet) == 3 and sum(1 for a, _ in kept if a == untouched) == 7
    for rec in (first, second):
        rec.engine().dispose()


def test_calls_written_after_their_account_was_deleted_are_swept_by_the_trim(app, make_account, recorder):
    from levqor_core.accounts import deletion
    from levqor_core.accounts.models import Account
    from levqor_core.keys import service as keys

    account_id, _ = make_account(with_key=False)
    r = app.extensions["levqor.redis"]
    late = request_log.Recorder(app.config["SQLALCHEMY_DATABASE_URI"], flush_seconds=0, redis_client=r)
    late.add(a_call(time.time(), account_id, "req_buffered"))  # a process still holds one of its calls
    with app.app_context():
        account = db.session.get(Account, account_id)
        deletion.delete(account, keys.Actor(email="test"))
    assert late.flush() == 1  # written after the deletion
    with app.app_context():
        assert queries.trim_written(r) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(RequestLogEntry)) == 0
        # Past the sweep's window the account is forgotten.
        later = utcnow() + timedelta(seconds=queries.DELETED_SWEEP_SECONDS + 1)
        queries.trim_written(r, now=later)
    assert r.zcard(queries.DELETED_ACCOUNTS) == 0
    late.engine().dispose()


# ---- as shipped ---------------------------------------------------------------------------------


def test_the_procfile_web_process_logs_request_ids_and_writes_the_log(postgres_server, redis_server, tmp_path):
    processes = shipped.procfile()
    port = free_port()
    # A fresh database numbers its first account 1 again, and per-account counters in Redis (the
    # day's key creation) are keyed by that id: a new deployment starts on an empty Redis too.
    redis.Redis.from_url(redis_server.url).flushdb()
    env = shipped.shipped_env(
        postgres_server.create_database(f"reqlog_{uuid.uuid4().hex[:8]}"), redis_server.url, port, tmp_path
    )
    base = f"http://127.0.0.1:{port}"
    release = subprocess.run(
        ["bash", "-c", processes["release"]], cwd=shipped.ROOT, env=env, capture_output=True, text=True
    )
    assert release.returncode == 0, release.stderr[-2000:]
    out = (tmp_path / "web.out").open("w+")
    web = shipped.start_procfile_line(processes["web"], env, output=out)
    try:
        shipped.wait_for(lambda: shipped.web_is_up(base), 60, what="the web process answering")
        email = f"reqlog-{uuid.uuid4().hex[:8]}@example.com"
        key = signup.developer_with_key(base, email, lambda web, email: signup.confirm_with_cli(env, email))
        with httpx.Client(base_url=base, timeout=10, headers={"x-api-key": key}) as api:
            ok = api.get("/api/v1/workflows")
            missing = api.get("/api/v1/jobs/job_0a1b2c3d4e5f60718293")
        assert (ok.status_code, missing.status_code) == (200, 404)
        assert missing.json()["request_id"] == missing.headers["Request-Id"]

        def logged() -> str | None:
            text = (tmp_path / "web.out").read_text()
            return text if missing.headers["Request-Id"] in text and ok.headers["Request-Id"] in text else None

        text = shipped.wait_for(logged, 10, what="the access log lines")
        line = next(x for x in text.splitlines() if missing.headers["Request-Id"] in x)
        assert '"GET /api/v1/jobs/job_0a1b2c3d4e5f60718293 HTTP/1.1" 404' in line
        assert line.endswith(f"request_id={missing.headers['Request-Id']}")

        # The served process writes the log by itself (its flush thread, every 2 s by default).
        engine = sa.create_engine(env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://"))
        try:

            def written():
                with engine.connect() as conn:
                    found = conn.execute(sa.select(RequestLogEntry.request_id, RequestLogEntry.status)).all()
                return {r: s for r, s in found} if len(found) >= 3 else None  # the key's creation, then ours

            stored = shipped.wait_for(written, 15, what="the request log written")
        finally:
            engine.dispose()
        assert stored[ok.headers["Request-Id"]] == 200 and stored[missing.headers["Request-Id"]] == 404
    finally:
        shipped.stop_procfile_line(web)
        out.close()
