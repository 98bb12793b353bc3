"""The job poll's answers held in Redis (levqor_core.apijobs.poll_cache), on one Redis and on a
Redis Cluster: a held answer is served without SQL, and no order of writes, fills, failovers or
restarts lets a poll show a status older than the one committed before it began.

tests/test_job_poll.py watches the same promise while the real worker process runs jobs."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from levqor_core import redis_conn
from levqor_core.accounts.models import Account
from levqor_core.apijobs import jobs, poll_cache
from levqor_core.apijobs.models import Job
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.metering import counters as metering

from . import both_backends

cx, app = both_backends.fixtures()


@pytest.fixture
def caller(client, make_account):
    account_id, raw = make_account(tier="enterprise")

    def call(method, path, **kwargs):
        return client.request(method, "/api" + path, headers={"x-api-key": raw}, **kwargs)

    call.account_id = account_id
    return call


@pytest.fixture
def queued(caller):
    """A queued job (no worker runs in these tests) and its first poll, whose answer is now held."""
    job = caller("POST", "/v1/jobs", json={"workflow": "echo", "input": {"text": "hi"}}).json()
    assert caller("GET", f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    return job


@pytest.fixture
def checkouts(app):
    """The database connections the app takes from here on, from any of its pools (the poll's own
    runs a plain DBAPI cursor, which SQLAlchemy's statement events do not see)."""
    taken = []
    with app.app_context():
        pools = [engine.pool for engine in db.engines.values()]

    def count(*_):
        taken.append(1)

    for pool in pools:
        sa.event.listen(pool, "checkout", count)
    yield taken
    for pool in pools:
        sa.event.remove(pool, "checkout", count)


def _held(app, account_id: int, job_id: str) -> bytes | None:
    with app.app_context():
        return redis_conn.for_limits().hget(poll_cache.keys(account_id, job_id)[0], "body")


def _set_status_in_the_database_only(app, job_id: str, status: str, **values) -> None:
    """A committed write that tells Redis nothing (what a write while Redis was away leaves)."""
    with app.app_context():
        db.session.execute(sa.update(Job).where(Job.id == job_id).values(status=status, **values))
        db.session.commit()


def _write(app, account_id: int, job_id: str, status: str, **values) -> None:
    """A committed write of the job's row, told to Redis as the app's writes are."""
    with app.app_context(), poll_cache.writes([(account_id, job_id)]):
        _set_status_in_the_database_only(app, job_id, status, **values)


def _poll_with_a_write_between_its_read_and_its_fill(caller, monkeypatch, write) -> dict:
    """A new job's first poll, with `write(account_id, job_id)` landing after the poll read the
    database and before it offers what it read to Redis; returns the job. That poll says `queued`
    (it began before the write)."""
    job = caller("POST", "/v1/jobs", json={"workflow": "echo", "input": {}}).json()
    read = jobs.read

    def read_then_write(account_id, job_id):
        found = read(account_id, job_id)
        write(account_id, job_id)
        return found

    monkeypatch.setattr(jobs, "read", read_then_write)
    assert caller("GET", f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    monkeypatch.setattr(jobs, "read", read)
    return job


def test_a_held_answer_is_served_without_sql_and_says_what_the_database_says(app, caller, queued, checkouts):
    polls = [caller("GET", f"/v1/jobs/{queued['id']}") for _ in range(3)]
    assert checkouts == []
    assert [p.status_code for p in polls] == [200] * 3
    with app.app_context():
        assert polls[0].json() == jobs.read(caller.account_id, queued["id"])
    assert polls[0].headers["content-type"] == "application/json"
    assert "x-ratelimit-remaining" in {k.lower() for k in polls[0].headers}  # the gate's headers as ever


def test_a_cancel_drops_the_held_answer_and_the_next_poll_says_canceled(app, caller, queued):
    assert caller("POST", f"/v1/jobs/{queued['id']}/cancel").status_code == 200
    assert _held(app, caller.account_id, queued["id"]) is None
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"  # held again, as canceled
    assert b'"canceled"' in _held(app, caller.account_id, queued["id"])


def test_a_read_from_before_a_write_is_not_held_after_it(app, caller, monkeypatch):
    """The poll reads `queued`; a cancel commits before the poll holds it: the next poll says canceled."""

    def a_cancel_lands(account_id, job_id):
        with app.app_context():
            jobs.cancel(account_id, job_id)

    job = _poll_with_a_write_between_its_read_and_its_fill(caller, monkeypatch, a_cancel_lands)
    assert _held(app, caller.account_id, job["id"]) is None
    assert caller("GET", f"/v1/jobs/{job['id']}").json()["status"] == "canceled"


def test_a_read_whose_write_a_failover_lost_is_not_held_on_the_new_primary(app, caller, monkeypatch):
    """The poll reads `queued`; a write commits and is told to the primary, which dies before its
    replica has the counts. On the promoted replica the generation is what the gate saw, but the
    server's epoch is not: the fill is refused and the next poll reads `running`."""

    def a_write_a_failover_loses(account_id, job_id):
        with app.app_context():
            r = redis_conn.for_limits()
            generation = poll_cache.keys(account_id, job_id)[2]
            seen = r.get(generation)
            _write(app, account_id, job_id, "running")
            if seen is None:  # the promoted replica's view: the write's counts never arrived
                r.delete(generation)
            else:
                r.set(generation, seen)
            r.set(metering.epoch_key(account_id), "a-life-on-the-promoted-replica")

    job = _poll_with_a_write_between_its_read_and_its_fill(caller, monkeypatch, a_write_a_failover_loses)
    assert _held(app, caller.account_id, job["id"]) is None
    assert caller("GET", f"/v1/jobs/{job['id']}").json()["status"] == "running"


def test_while_a_write_is_in_flight_every_poll_reads_the_database(app, caller, queued, checkouts):
    with app.app_context(), poll_cache.writes([(caller.account_id, queued["id"])]):
        _set_status_in_the_database_only(app, queued["id"], "running")
        checkouts.clear()
        assert [caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] for _ in range(2)] == ["running"] * 2
        assert len(checkouts) == 2  # one read each, nothing held meanwhile
        assert _held(app, caller.account_id, queued["id"]) is None
    caller("GET", f"/v1/jobs/{queued['id']}")
    assert b'"running"' in _held(app, caller.account_id, queued["id"])


def test_an_answer_held_by_an_earlier_life_of_the_server_is_not_used(app, caller, queued):
    """A failover, or a restart that kept some keys, may have lost a write's drop: an answer held
    under another epoch (replication id, bucket's life) is read again from the database."""
    _set_status_in_the_database_only(app, queued["id"], "running")
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "queued"  # what a lost drop looks like
    with app.app_context():
        redis_conn.for_limits().delete(metering.epoch_key(caller.account_id))  # a new life of the bucket
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "running"


def test_the_requeue_and_the_purge_drop_the_answers_they_change(app, caller, queued):
    _write(app, caller.account_id, queued["id"], "running", started_at=utcnow() - timedelta(hours=1))
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "running"
    with app.app_context():
        jobs.requeue_stranded(utcnow())
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "queued"

    _write(app, caller.account_id, queued["id"], "succeeded", finished_at=utcnow() - timedelta(days=40))
    assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "succeeded"
    assert _held(app, caller.account_id, queued["id"]) is not None
    with app.app_context():
        assert jobs.purge_finished(utcnow(), timedelta(days=30)) == 1
    assert _held(app, caller.account_id, queued["id"]) is None
    assert caller("GET", f"/v1/jobs/{queued['id']}").status_code == 404


def test_an_id_not_of_our_form_names_no_key(app, caller, queued):
    assert caller("GET", "/v1/jobs/job_" + "0" * 20).status_code == 404
    assert caller("GET", "/v1/jobs/job_" + "x" * 300).status_code == 400  # the spec's pattern
    assert _held(app, caller.account_id, "job_" + "0" * 20) is None  # a 404 is never held
    assert _held(app, caller.account_id, queued["id"]) is not None


def test_another_account_in_the_same_slot_is_never_answered_anothers_job(app, client, caller, queued):
    """Answers are held per account, not only per slot: an account whose id shares the victim's
    hash tag polls the victim's job id and is told it does not exist."""
    with app.app_context():
        stranger = Account(id=caller.account_id + metering.BUCKETS, email="stranger@example.com", password_hash="x")
        stranger.tier = "enterprise"
        db.session.add(stranger)
        db.session.commit()
        raw = keys.issue(stranger, keys.Actor(email="test")).raw
    assert metering.tag(stranger.id) == metering.tag(caller.account_id)
    for _ in range(2):
        polled = client.get(f"/api/v1/jobs/{queued['id']}", headers={"x-api-key": raw})
        assert polled.status_code == 404, polled.text


def test_a_write_while_redis_is_away_is_made_and_logged(app, caller, queued, outage, single_redis, caplog):
    """Redis away: the cancel is committed all the same (its poll answers were on the server that
    went away), and the log says the write was not told; the polls read the database meanwhile."""
    outage()
    with caplog.at_level("WARNING", logger="levqor_core.apijobs.poll_cache"):
        assert caller("POST", f"/v1/jobs/{queued['id']}/cancel").status_code == 200
        assert caller("GET", f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"
    assert any("not told to Redis" in r.getMessage() for r in caplog.records)


def test_a_large_answer_is_not_held_and_is_read_at_every_poll(app, caller, checkouts):
    """A result of up to 256 KiB is stored with its job: such answers are not held in Redis."""
    job = caller("POST", "/v1/jobs", json={"workflow": "echo", "input": {"text": "x" * 20_000}}).json()
    checkouts.clear()
    polls = [caller("GET", f"/v1/jobs/{job['id']}") for _ in range(2)]
    assert [p.json()["input"]["text"] for p in polls] == ["x" * 20_000] * 2
    assert len(polls[0].content) > poll_cache.MAX_HELD_BYTES
    assert _held(app, caller.account_id, job["id"]) is None
    assert len(checkouts) == 2


def test_a_short_write_does_not_shorten_a_longer_one_in_flight(app, caller, queued):
    """The worker holds its writes in flight around a whole run (API_JOB_TIMEOUT and more); a cancel
    meanwhile (60 s) must not bring their expiry closer."""
    writing = poll_cache.keys(caller.account_id, queued["id"])[1]
    with app.app_context(), poll_cache.writes([(caller.account_id, queued["id"])], seconds=120):
        r = redis_conn.for_limits()
        assert r.ttl(writing) > 60
        with poll_cache.writes([(caller.account_id, queued["id"])]):
            assert r.ttl(writing) > 60
        assert r.get(writing) == b"1" and r.ttl(writing) > 60
    with app.app_context():
        assert redis_conn.for_limits().exists(writing) == 0
