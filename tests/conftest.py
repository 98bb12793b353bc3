"""Fixtures: real Redis and PostgreSQL per session, a clean database per test, small factories."""

import email
import email.policy
import os
import re
import uuid
import weakref

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask_migrate import upgrade

from levqor_core import app as app_module
from levqor_core.accounts import mail as account_mail
from levqor_core.accounts import service as accounts
from levqor_core.accounts.models import Account
from levqor_core.app import create_app
from levqor_core.extensions import db
from levqor_core.keys import service as keys
from levqor_core.ops import daily_stats
from levqor_core.requestlog.recorder import Recorder
from levqor_core.web.limiter import limiter

from .fakes.notion_server import NotionServer
from .sdk_build import generated, live_url, node_project, python_sdk  # noqa: F401 (fixtures)
from .servers import PostgresServer, RedisClusterServer, RedisServer, free_port
from .xdist_groups import GroupScheduling, first_then_the_rest

# Every response the suite provokes is checked against the spec, in this process and in the
# servers the tests start (production leaves it off: README "Speed").
os.environ.setdefault("VALIDATE_RESPONSES", "1")

PASSWORD = "correct horse battery"
NOTION_TOKEN = "secret_fake_notion_token"  # noqa: S105

# Every request log recorder of every app this process builds (the suite's, and the many apps tests
# build for themselves). A recorder's thread outlives its test: a flush it began before the next
# test's cleanup took its ids from the sequence then, and committed them after the tables were
# emptied and the sequences restarted; the next test's calls then met those ids (UniqueViolation:
# its calls dropped, CI of 45d9830). `_clean_state` waits for and empties them all first.
_RECORDERS: "weakref.WeakSet[Recorder]" = weakref.WeakSet()


class _TrackedRecorder(Recorder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _RECORDERS.add(self)


app_module.Recorder = _TrackedRecorder


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` with the groups of tests/xdist_groups.py (pytest-xdist's marks do nothing
    with pytest 9.2)."""
    if config.getvalue("dist") == "loadgroup":
        return GroupScheduling(config, log)
    return None


def pytest_collection_modifyitems(config, items):
    """The longest tests first (tests/xdist_groups.py FIRST), so no worker ends the run alone on one."""
    first_then_the_rest(items)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster (3 primaries, 3 replicas), started once per worker by the first test that
    needs it (tests/both_backends.py)."""
    server = RedisClusterServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def database_url(postgres_server):
    return postgres_server.create_database("levqor_test")


# argon2id at the production parameters (levqor_core/accounts/security.py) costs ~25 ms of CPU per
# hash and per check, and the suite signs up and logs in hundreds of times: its app hashes with
# argon2id at the smallest cost instead. What measures hashing runs at the production parameters:
# `production_hashing_cx` below, and every test of the processes as shipped (their own settings).
CHEAP_HASHING = {
    "SECURITY_PASSWORD_HASH_PASSLIB_OPTIONS": {
        "argon2__type": "ID",
        "argon2__memory_cost": 8,
        "argon2__rounds": 1,
        "argon2__parallelism": 1,
    }
}


@pytest.fixture(scope="session")
def app_config(redis_server, database_url) -> dict:
    """The settings of the suite's app, on this pytest process's servers, hashing at production cost."""
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url.replace("postgresql://", "postgresql+psycopg://"),
        "REDIS_URL": redis_server.url,
        "USAGE_FLUSH_SECONDS": 0,  # tests flush explicitly
        "SECRET_KEY": "test-secret",
        "RATELIMIT_STORAGE_URI": redis_server.url,
        # Never GitHub itself: the secret-scanning tests serve its keys from a fake
        # (tests/fakes/github_keys_server.py); anything else is refused on loopback.
        "GITHUB_SECRET_SCANNING_KEYS_URL": "http://127.0.0.1:9/meta/public_keys/secret_scanning",
    }


@pytest.fixture(scope="session")
def cx(app_config):
    """The Connexion app (ASGI), on the real servers, schema built by the migrations."""
    app = create_app(app_config | CHEAP_HASHING)
    with app.app.app_context():
        upgrade()
    yield app
    # The servers stop after this: the request log's last flush at exit would find no database, and
    # the request totals' next tick no Redis (an empty tick touches nothing).
    app.app.extensions["levqor.request_log"].clear()
    daily_stats.flush_daily_stats(app.app.extensions["levqor.redis"])


@pytest.fixture(scope="session")
def app(cx):
    return cx.app


@pytest.fixture(scope="session")
def cluster_cx(app_config, redis_cluster):
    """The suite's app with LIMITS_REDIS_URL on the Redis Cluster (one node's URL: the app finds
    out it is a cluster); RQ and the rest stay on the suite's Redis and database. Flask-Limiter
    stays on the suite's Redis too: its one Limiter per process takes the storage of the last app
    it was given, and the suite's app's limits must not move (tests/test_limits_redis.py checks
    that the storage follows LIMITS_REDIS_URL)."""
    app = create_app(app_config | CHEAP_HASHING | {"LIMITS_REDIS_URL": redis_cluster.url})
    with app.app.app_context():
        upgrade()  # at head already when `cx` ran first: nothing to do
    yield app
    app.app.extensions["levqor.request_log"].clear()
    daily_stats.flush_daily_stats(app.app.extensions["levqor.redis"])


@pytest.fixture
def production_hashing_cx(cx, app_config):
    """A second app on the same database and Redis whose passwords are hashed as in production."""
    return create_app(app_config)


_EMPTYING: list = []


def _emptying(session) -> sa.TextClause:
    """Every table's rows deleted, dependents first, and every sequence restarted (ids start at 1).

    Not TRUNCATE: it gives each table a new file and unlinks the old, ~15-40 ms of PostgreSQL's CPU
    for the 16 tables, where deleting a test's few rows takes ~3 ms; the suite empties them ~1,100
    times. job_state_counts goes last: deleting jobs updates it through its triggers."""
    if not _EMPTYING:
        tables = [t.name for t in reversed(db.metadata.sorted_tables) if t.name != "job_state_counts"]
        sequences = session.scalars(
            sa.text("SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()")
        ).all()
        # The names are the metadata's and the database's own, not input.
        statements = [f"DELETE FROM {t}" for t in [*tables, "job_state_counts"]]  # noqa: S608
        statements += [f"ALTER SEQUENCE {name} RESTART" for name in sequences]
        _EMPTYING.append(sa.text("; ".join(statements)))
    return _EMPTYING[0]


@pytest.fixture(autouse=True)
def _clean_state(request):
    """Every test starts with empty tables and an empty Redis, and no call of an earlier test's apps
    still to be written."""
    for recorder in list(_RECORDERS):
        recorder.clear()  # waits for a flush under way
    if "cx" not in request.fixturenames and "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    with app.app_context():
        db.session.execute(_emptying(db.session))
        db.session.commit()
        app.extensions["levqor.redis"].flushdb()
        if app.extensions["levqor.limits_redis"] is not app.extensions["levqor.redis"]:
            app.extensions["levqor.limits_redis"].flushdb()  # every primary of a cluster
    app.extensions["levqor.gate"].outage.pending.clear()
    app.extensions["levqor.gate"].outage.uncertain.clear()
    app.extensions["levqor.gate"].flusher.journal.clear()
    app.extensions["levqor.gate"].records.owners.clear()  # account ids restart at 1 each test
    yield


@pytest.fixture
def outage(redis_server):
    """Stops the real Redis server; always starts it again, even if the test fails."""
    yield redis_server.stop
    if redis_server.proc is None:
        redis_server.start()
    # Flask-Limiter keeps counting in process memory until a back-off check (up to minutes) finds
    # Redis again; switching mid-test would split the next tests' log-in counts across the two.
    limiter._storage_dead = False


@pytest.fixture
def single_redis():
    """Requested by a test that measures one plain Redis (tests/both_backends.py skips it on the cluster)."""


@pytest.fixture
def app_ctx(app):
    with app.app_context():
        yield


@pytest.fixture
def client(cx):
    return cx.test_client(follow_redirects=False)


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


class Portal:
    """A browser-like session on the portal: signs up, keeps cookies, knows the CSRF token."""

    def __init__(self, cx):
        self.cx = cx
        self.client = cx.test_client(follow_redirects=False)
        self.csrf = None
        self.email = None

    def sign_up(self, email: str | None = None, password: str = PASSWORD, confirm: bool = True) -> "Portal":
        """Sign up over HTTP, confirm the address (as `flask accounts confirm` does; the link itself is
        tested in test_accounts.py) and log in."""
        self.email = email or f"dev-{uuid.uuid4().hex[:10]}@example.com"
        token = csrf_from(self.client.get("/signup").text)
        response = self.client.post("/signup", data={"email": self.email, "password": password, "csrf_token": token})
        assert response.status_code == 302, response.text
        if confirm:
            with self.cx.app.app_context():
                accounts.confirm(accounts.by_email(self.email))
        return self.log_in(password)

    def log_in(self, password: str = PASSWORD) -> "Portal":
        token = csrf_from(self.client.get("/login").text)
        response = self.client.post("/login", data={"email": self.email, "password": password, "csrf_token": token})
        assert response.status_code == 302, response.text
        self.csrf = csrf_from(self.client.get("/developer").text)
        return self

    def new_key(self, **body):
        return self.client.post("/api/key/new", json=body, headers={"X-CSRFToken": self.csrf})


@pytest.fixture
def portal(cx):
    return lambda: Portal(cx)


@pytest.fixture
def make_account(app):
    """Create an account (and optionally its key) straight through the core."""

    def make(tier: str = "sandbox", with_key: bool = True):
        with app.app_context():
            account = Account(email=f"acct-{uuid.uuid4().hex[:10]}@example.com", password_hash="x", tier=tier)
            db.session.add(account)
            db.session.commit()
            raw = keys.issue(account, keys.Actor(email="test")).raw if with_key else None
            return account.id, raw

    return make


class _Inbox:
    """What a real SMTP server (aiosmtpd) received: (recipients, raw message) pairs."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append((envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"

    def to(self, address: str) -> list:
        """The messages sent to `address`, parsed, oldest first, once the account mail handed over so
        far is sent (it goes out from a pool of its own)."""
        account_mail.wait_until_sent()
        return [
            email.message_from_string(raw, policy=email.policy.default)
            for rcpt, raw in self.messages
            if address in rcpt
        ]


@pytest.fixture
def smtp(app, monkeypatch):
    """A real SMTP server on loopback, and the app sending through it."""
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.port = controller.port
    monkeypatch.setitem(app.config, "SMTP_HOST", "127.0.0.1")
    monkeypatch.setitem(app.config, "SMTP_PORT", controller.port)
    monkeypatch.setitem(app.config, "SMTP_STARTTLS", False)
    yield inbox
    controller.stop()


@pytest.fixture
def notion_server():
    """A fake Notion API on loopback (tests/fakes/notion_server.py), with a parent page to write under."""
    server = NotionServer(token=NOTION_TOKEN).start()
    server.parent = server.fake.add_page("Levqor Ops")
    yield server
    server.close()


@pytest.fixture
def notion_fake(notion_server):
    """The fake Notion's state: its databases, rows and request counts."""
    return notion_server.fake


@pytest.fixture
def notion_on(app, notion_server, monkeypatch):
    """Point the app at the fake Notion, unthrottled (the pacing has its own test)."""
    for name, value in {
        "NOTION_TOKEN": NOTION_TOKEN,
        "NOTION_PARENT_PAGE_ID": notion_server.parent,
        "NOTION_BASE_URL": notion_server.url,
        "NOTION_MAX_RPS": 0,
        "NOTION_MAX_ATTEMPTS": 3,
    }.items():
        monkeypatch.setitem(app.config, name, value)
    return notion_server
