"""Every private name of a framework the app relies on, checked at the pinned versions.

The app reaches past a few frameworks' public APIs (docs/decisions/ says where, why and what it
saves). Each such name is listed once here: a test per entry fails, naming the module and the
name, when an upgrade removes it or changes its shape. A function the app copied or mirrors is
pinned by a hash of its upstream source, so any change to it upstream is seen, not only a rename.
levqor_core/framework_pins.py checks at start-up that the installed versions are the pinned ones.

Upgrading a framework: change its pin, install it, run this file. For each failure, read the
upstream change, adapt the app (or drop the deviation, see its decision record), then refresh the
hashes with `.venv/bin/python -m tests.test_framework_privates`, which prints the current ones.
"""

import functools
import hashlib
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass

import pytest

from levqor_core import framework_pins


@dataclass(frozen=True)
class Private:
    """A private name: `module`, then `name` (dotted, inside the module), and what must hold.

    kind: "exists"    the name resolves;
          "signature" it resolves and its parameters are `expect` (names, in order);
          "source"    it resolves and the sha256 of its source starts with `expect` (copied or mirrored code);
          "mentions"  the source of `name` contains `expect` (an attribute or key it sets that the
                      app reads or writes, which only exists on instances);
          "shape"     `expect` is a function of the resolved object returning a problem or None.
    """

    module: str
    name: str
    kind: str
    expect: object
    used_in: str
    decision: str

    @property
    def id(self) -> str:
        suffix = f"[{self.expect}]" if self.kind == "mentions" else ""
        return f"{self.module}:{self.name}{suffix}"


def _parse_url_layout(parse_url) -> str | None:
    """The keys redis_scripts.ScriptClient reads from redis-py's parsed URL."""
    from redis.asyncio.connection import SSLConnection

    tls = parse_url("rediss://user:pw@example.test:6380/2?ssl_cert_reqs=none")
    unix = parse_url("unix:///tmp/redis.sock?db=1")
    want_tls = {"host": "example.test", "port": 6380, "username": "user", "password": "pw", "db": 2}
    if any(tls.get(k) != v for k, v in want_tls.items()):
        return f"rediss:// parsed as {tls}"
    if tls.get("connection_class") is not SSLConnection or tls.get("ssl_cert_reqs") != "none":
        return f"rediss:// no longer marked by connection_class=SSLConnection and ssl_cert_reqs: {tls}"
    if unix.get("path") != "/tmp/redis.sock" or unix.get("db") != 1:  # noqa: S108  (parsed, never opened)
        return f"unix:// parsed as {unix}"
    return None


def _limiter_hooks_are_its_own(limiter_class) -> str | None:
    """levqor_core.web.limiter finds Flask-Limiter's after-request and teardown hooks by module."""
    from flask import Flask

    app = Flask("privates")
    limiter_class(key_func=lambda: "k").init_app(app)

    def module_of(hook):
        return getattr(getattr(hook, "func", hook), "__module__", "")

    for kind, hooks in (("after_request", app.after_request_funcs), ("teardown", app.teardown_request_funcs)):
        if not any(module_of(h).startswith("flask_limiter.") for h in hooks.get(None, [])):
            return f"no {kind} hook from a flask_limiter module"
    return None


# Flask-Security-Too's views portal/views/auth.py wraps by endpoint name (limits, timing, freshness).
SECURITY_ENDPOINTS = (
    "login",
    "two_factor_token_validation",
    "mf_recovery",
    "verify",
    "change_password",
    "forgot_password",
    "send_confirmation",
    "change_email",
)


def _security_views_registered(create_blueprint) -> str | None:
    source = inspect.getsource(create_blueprint)
    missing = [e for e in SECURITY_ENDPOINTS if f"({e})" not in source and f'endpoint="{e}"' not in source]
    return f"no longer registers {missing}" if missing else None


def _validator_map_keys(validator_map) -> str | None:
    missing = {"body", "response"} - set(validator_map)
    return f"VALIDATOR_MAP lacks {sorted(missing)}" if missing else None


FC = "levqor_core/web/framework_costs.py"
VAL = "levqor_core/web/validation.py"
BRIDGE = "levqor_core/web/wsgi_bridge.py"
LIM = "levqor_core/web/limiter.py"
KCL = "levqor_core/web/key_creation_limit.py"
SESS = "levqor_core/web/sessions.py"
WORKER = "jobs/worker.py"

D_ONCE = "0001-connexion-operations-built-once"
D_ROUTES = "0002-indexed-routing"
D_APIKEY = "0003-api-key-handler-signature-read-once"
D_VALID = "0004-connexion-validators"
D_BRIDGE = "0005-wsgi-bridge"
D_SYNC = "0006-flask-ensure-sync-cache"
D_LIMITER = "0007-flask-limiter-hooks-only-where-limited"
D_WINDOW = "0008-key-creation-window-from-limiter-storage"
D_SESS = "0009-no-session-work-without-credentials"
D_FS = "0010-flask-security-internals"
D_RQ = "0011-rq-cron-leader-and-pool-queues"
D_REDIS = "0012-redis-script-client"
D_APIW = "0015-api-worker-no-fork"
D_STOP = "0016-web-worker-ends-streams"
WEB = "levqor_core/web/web_worker.py"

PRIVATES = (
    # Connexion: per-operation work done once (framework_costs.install, _Api, _Operation, _BuiltOnceDecorator)
    Private("connexion.apps.flask", "FlaskApp.__init__", "mentions", "self._middleware_app =", FC, D_ONCE),
    Private("connexion.apps.flask", "FlaskASGIApp.add_api", "source", "57201c46049a", FC, D_ONCE),
    Private("connexion.apps.flask", "FlaskApi.make_operation", "source", "e6fcc04fd849", FC, D_ONCE),
    Private("connexion.apps.flask", "FlaskOperation.fn", "source", "69dea96881a0", FC, D_ONCE),
    Private("connexion.apps.flask", "FlaskOperation.from_operation", "exists", None, FC, D_ONCE),
    Private("connexion.apps.flask", "FlaskOperation.__init__", "mentions", "self._fn = fn", FC, D_ONCE),
    Private("connexion.decorators.main", "FlaskDecorator.__call__", "source", "2c2c8752eb20", FC, D_ONCE),
    Private("connexion.decorators.main", "BaseDecorator.decorate", "source", "67f7b01cbbd3", FC, D_ONCE),
    Private("connexion.decorators.main", "BaseDecorator._response_decorator_cls", "exists", None, FC, D_ONCE),
    Private("connexion.decorators.main", "BaseDecorator._sync_async_decorator", "exists", None, FC, D_ONCE),
    Private("connexion.decorators.main", "BaseDecorator.uri_parser", "exists", None, FC, D_ONCE),
    Private("connexion.decorators.main", "FlaskDecorator.framework", "exists", None, FC, D_ONCE),
    Private("connexion.frameworks.flask", "Flask.get_request", "signature", ("uri_parser", "kwargs"), FC, D_ONCE),
    Private("connexion.decorators.parameter", "unwrap_decorators", "signature", ("function",), FC, D_ONCE),
    Private("connexion.utils", "inspect_function_arguments", "signature", ("function",), FC, D_ONCE),
    # Connexion's router, indexed by path (framework_costs.IndexedRoutingMiddleware, _IndexedRoutes)
    Private("starlette._utils", "get_route_path", "signature", ("scope",), FC, D_ROUTES),
    Private("starlette.routing", "Router.app", "source", "a46fc9bb9816", FC, D_ROUTES),
    Private("starlette.routing", "Route.__init__", "mentions", "self.param_convertors", FC, D_ROUTES),
    Private("connexion.middleware.routing", "RoutingAPI.__init__", "mentions", "self.router = Router(", FC, D_ROUTES),
    Private("connexion.middleware.main", "ConnexionMiddleware.default_middlewares", "exists", None, FC, D_ROUTES),
    # Connexion's apiKey handler (framework_costs.ApiKeyHandler)
    Private("connexion.security", "AbstractSecurityHandler._generic_check", "source", "1cd294438014", FC, D_APIKEY),
    # ...which also calls a security function marked `answers_missing_credentials` without its header
    Private(
        "connexion.security",
        "ApiKeySecurityHandler._get_verify_func",
        "signature",
        ("self", "api_key_info_func", "loc", "name", "required_scopes"),
        FC,
        D_APIKEY,
    ),
    Private(
        "connexion.security",
        "ApiKeySecurityHandler.check_api_key",
        "signature",
        ("self", "api_key_info_func"),
        FC,
        D_APIKEY,
    ),
    Private(
        "connexion.security", "AbstractSecurityHandler._accepts_kwarg", "signature", ("func", "keyword"), FC, D_APIKEY
    ),
    Private("connexion.security", "AbstractSecurityHandler.required_scopes_kw", "exists", None, FC, D_APIKEY),
    Private("connexion.security", "AbstractSecurityHandler.request_kw", "exists", None, FC, D_APIKEY),
    # Connexion's validators (validation.py)
    Private("connexion.validators.json", "JSONRequestBodyValidator._parse", "source", "85ca34eee065", VAL, D_VALID),
    Private(
        "connexion.validators.json", "JSONResponseBodyValidator._validate", "signature", ("self", "body"), VAL, D_VALID
    ),
    Private(
        "connexion.validators.abstract",
        "AbstractRequestBodyValidator.__init__",
        "mentions",
        "self._encoding =",
        VAL,
        D_VALID,
    ),
    Private(
        "connexion.validators.abstract",
        "AbstractResponseBodyValidator.__init__",
        "mentions",
        "self._schema =",
        VAL,
        D_VALID,
    ),
    Private("connexion.validators", "VALIDATOR_MAP", "shape", _validator_map_keys, VAL, D_VALID),
    # Flask's WSGI hand-off (wsgi_bridge.py, framework_costs.install)
    Private("connexion.apps.flask", "FlaskASGIApp.__init__", "source", "00e42d16b25d", BRIDGE, D_BRIDGE),
    Private("a2wsgi.wsgi", "Body", "signature", ("loop", "receive"), BRIDGE, D_BRIDGE),
    Private("a2wsgi.wsgi", "build_environ", "signature", ("scope", "body"), BRIDGE, D_BRIDGE),
    Private(
        "a2wsgi.wsgi", "build_environ", "mentions", '"asgi.scope": scope', "levqor_core/web/request_log.py", D_BRIDGE
    ),
    # Flask
    Private("flask", "Flask.ensure_sync", "signature", ("self", "func"), FC, D_SYNC),
    Private("flask.globals", "_cv_request", "exists", None, LIM, D_LIMITER),
    Private("flask.sessions", "SecureCookieSessionInterface.save_session", "source", "9c299ae317cf", SESS, D_SESS),
    # Flask-Limiter (limiter.py, key_creation_limit.py)
    Private("flask_limiter", "Limiter._check_request_limit", "exists", None, LIM, D_LIMITER),
    Private("flask_limiter", "Limiter.context", "mentions", "_limiter_request_context", LIM, D_LIMITER),
    Private("flask_limiter", "Limiter", "shape", _limiter_hooks_are_its_own, LIM, D_LIMITER),
    Private("flask_limiter", "Limiter._Limiter__evaluate_limits", "source", "d7ad66e821c2", KCL, D_WINDOW),
    Private("flask_limiter._limits", "RuntimeLimit.scope_for", "source", "7f6348c6404f", KCL, D_WINDOW),
    # Flask-Login, Flask-Principal, Flask-Security-Too: the anonymous fast path (web/sessions.py)
    Private("flask_login.utils", "_get_user", "mentions", "g._login_user", SESS, D_SESS),
    Private("flask_principal", "Principal._on_before_request", "source", "99830c9f41f1", SESS, D_SESS),
    Private("flask_principal", "Principal.__init__", "mentions", "self.identity_loaders", SESS, D_SESS),
    Private("flask_security.core", "_identity_loader", "exists", None, SESS, D_SESS),
    Private("flask_security.core", "Security.init_app", "mentions", "self.principal =", SESS, D_SESS),
    # Flask-Security-Too: accounts/service.py, reauth.py, totp.py, security.py
    Private(
        "flask_security.core",
        "PasswordUtil.validate",
        "signature",
        ("self", "password", "is_register", "kwargs"),
        "levqor_core/accounts/service.py",
        D_FS,
    ),
    Private("flask_security.proxies", "_security", "exists", None, "levqor_core/accounts/reauth.py", D_FS),
    Private(
        "flask_security.utils", "login_user", "mentions", 'session["fs_paa"]', "levqor_core/accounts/reauth.py", D_FS
    ),
    Private("flask_security.totp", "Totp.__init__", "source", "39b79b16851d", "levqor_core/accounts/totp.py", D_FS),
    Private(
        "flask_security.core",
        "Security.init_app",
        "mentions",
        "self.pwd_context =",
        "levqor_core/accounts/security.py",
        D_FS,
    ),
    Private(
        "flask_security.views", "_create_blueprint", "shape", _security_views_registered, "portal/views/auth.py", D_FS
    ),
    Private("flask_security.views", "login", "signature", (), "portal/views/auth.py", D_FS),
    # RQ (jobs/worker.py)
    Private("rq.cron", "CronScheduler._install_signal_handlers", "signature", ("self",), WORKER, D_RQ),
    Private("rq.cron", "CronScheduler.start", "mentions", "self._install_signal_handlers()", WORKER, D_RQ),
    Private("rq.cron", "CronScheduler.__init__", "mentions", "self._cron_jobs", WORKER, D_RQ),
    Private("rq.cron", "CronJob.__init__", "mentions", "self.next_enqueue_time", WORKER, D_RQ),
    Private("rq.cron", "CronJob.set_enqueue_time", "exists", None, WORKER, D_RQ),
    Private("rq.cron", "get_cron_job_history_key", "exists", None, WORKER, D_RQ),
    Private("rq.worker_pool", "WorkerPool.get_worker_process", "source", "7d625cdd7902", WORKER, D_RQ),
    Private("rq.worker_pool", "WorkerPool.__init__", "mentions", "self._queue_names", WORKER, D_RQ),
    Private("rq.worker_pool", "WorkerPool.__init__", "mentions", "self.worker_dict", WORKER, D_RQ),
    # RQ: the API queue's workers run jobs in their own process (jobs/worker.py ApiWorker)
    Private("rq.worker_pool", "WorkerPool.get_worker_process", "mentions", "self.worker_class", WORKER, D_APIW),
    Private("rq.worker", "SimpleWorker.execute_job", "mentions", "self.perform_job(job, queue)", WORKER, D_APIW),
    Private("rq.worker", "BaseWorker.perform_job", "mentions", "self.death_penalty_class(timeout", WORKER, D_APIW),
    Private("rq.worker", "BaseWorker.work", "mentions", "if self._stop_requested:", WORKER, D_APIW),
    Private("rq.command", "handle_stop_job_command", "mentions", "worker._stopped_job_id = job_id", WORKER, D_APIW),
    Private("rq.command", "handle_stop_job_command", "mentions", "worker.kill_horse()", WORKER, D_APIW),
    Private(
        "rq.worker",
        "BaseWorker.handle_job_failure",
        "signature",
        ("self", "job", "queue", "started_job_registry", "exc_string"),
        WORKER,
        D_APIW,
    ),
    Private("rq.worker", "BaseWorker.handle_job_failure", "mentions", "self._stopped_job_id == job.id", WORKER, D_APIW),
    Private("rq.worker", "BaseWorker.perform_job", "mentions", "self.handle_exception(job, *exc_info)", WORKER, D_APIW),
    Private("rq.registry", "StartedJobRegistry.cleanup", "mentions", "get_expired_job_ids(score)", WORKER, D_APIW),
    # uvicorn_worker: its worker's Server is ours, which ends the event streams first (web_worker.WebWorker)
    Private("uvicorn_worker._workers", "UvicornWorker._serve", "source", "b99ab14ff06c", WEB, D_STOP),
    Private("uvicorn_worker._workers", "UvicornWorker._install_sigquit_handler", "signature", ("self",), WEB, D_STOP),
    Private("uvicorn.server", "Server.shutdown", "signature", ("self", "sockets"), WEB, D_STOP),
    # redis-py's URL parsing, read by the gate's script client (levqor_core/redis_scripts.py)
    Private(
        "redis.asyncio.connection", "parse_url", "shape", _parse_url_layout, "levqor_core/redis_scripts.py", D_REDIS
    ),
)


def resolve(module: str, name: str):
    obj = importlib.import_module(module)
    for part in name.split("."):
        # getattr_static: a property or cached_property itself, not what it computes on the class.
        obj = inspect.getattr_static(obj, part)
    if isinstance(obj, property):
        return obj.fget
    if isinstance(obj, functools.cached_property):
        return obj.func
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    return obj


def source_hash(obj) -> str:
    return hashlib.sha256(textwrap.dedent(inspect.getsource(obj)).encode()).hexdigest()


def parameters(obj) -> tuple:
    return tuple(inspect.signature(obj).parameters)


def problem(private: Private) -> str | None:
    """What is wrong with `private` in the installed frameworks, naming it; None if it holds."""
    where = f"{private.id} (used in {private.used_in}, docs/decisions/{private.decision}.md)"
    try:
        obj = resolve(private.module, private.name)
    except (ImportError, AttributeError) as err:
        return f"{where}: missing ({err})"
    if private.kind == "exists":
        return None
    if private.kind == "signature":
        found = parameters(obj)
        return None if found == tuple(private.expect) else f"{where}: parameters {found}, expected {private.expect}"
    if private.kind == "source":
        found = source_hash(obj)
        return None if found.startswith(private.expect) else f"{where}: upstream source changed (sha256 {found[:12]})"
    if private.kind == "mentions":
        return None if private.expect in inspect.getsource(obj) else f"{where}: no longer contains {private.expect!r}"
    if private.kind == "shape":
        found = private.expect(obj)
        return None if found is None else f"{where}: {found}"
    raise ValueError(f"unknown kind {private.kind!r}")


@pytest.mark.parametrize("private", PRIVATES, ids=lambda p: p.id)
def test_private_name_holds_at_the_pinned_version(private):
    found = problem(private)
    assert found is None, found


def test_every_private_name_has_its_decision_record_and_its_user():
    from levqor_core.config import ROOT

    for private in PRIVATES:
        assert (ROOT / "docs" / "decisions" / f"{private.decision}.md").is_file(), private.id
        assert (ROOT / private.used_in).is_file(), private.id


def test_every_module_with_a_private_name_is_a_pinned_framework():
    """A private name of a package the start-up check does not pin could change under us silently."""
    from importlib.metadata import packages_distributions

    pinned = {framework_pins.canonical(name) for name in framework_pins.FRAMEWORKS}
    distributions = packages_distributions()
    for private in PRIVATES:
        top = private.module.split(".")[0]
        assert {framework_pins.canonical(d) for d in distributions[top]} & pinned, private.id


# The checker itself: a change upstream is reported, naming the name.


def test_the_checker_reports_a_missing_name(monkeypatch):
    import flask_limiter

    monkeypatch.delattr(flask_limiter.Limiter, "_check_request_limit")
    entry = next(p for p in PRIVATES if p.name == "Limiter._check_request_limit")
    assert problem(entry).startswith("flask_limiter:Limiter._check_request_limit (used in levqor_core/web/limiter.py")
    assert "missing" in problem(entry)


def test_the_checker_reports_a_changed_copied_function(monkeypatch):
    import connexion.security

    original = connexion.security.AbstractSecurityHandler._generic_check

    def _generic_check(self, func, exception_msg):  # same name and parameters, another body
        return original(self, func, exception_msg)

    monkeypatch.setattr(connexion.security.AbstractSecurityHandler, "_generic_check", _generic_check)
    entry = next(p for p in PRIVATES if p.name == "AbstractSecurityHandler._generic_check")
    found = problem(entry)
    assert found is not None and "connexion.security:AbstractSecurityHandler._generic_check" in found
    assert "upstream source changed" in found


def test_the_checker_reports_changed_parameters_and_a_dropped_attribute(monkeypatch):
    import rq.cron
    import starlette._utils

    monkeypatch.setattr(starlette._utils, "get_route_path", lambda scope, root=None: "")
    entry = next(p for p in PRIVATES if p.name == "get_route_path")
    assert "parameters ('scope', 'root'), expected ('scope',)" in problem(entry)

    def __init__(self, connection=None):  # an __init__ that no longer keeps _cron_jobs
        self.jobs = []

    monkeypatch.setattr(rq.cron.CronScheduler, "__init__", __init__)
    entry = next(p for p in PRIVATES if p.name == "CronScheduler.__init__")
    assert "no longer contains 'self._cron_jobs'" in problem(entry)


def test_the_checker_reports_a_changed_shape(monkeypatch):
    import redis.asyncio.connection

    original = redis.asyncio.connection.parse_url
    monkeypatch.setattr(redis.asyncio.connection, "parse_url", lambda url: {**original(url), "connection_class": None})
    entry = next(p for p in PRIVATES if p.name == "parse_url")
    assert "no longer marked by connection_class=SSLConnection" in problem(entry)


# The start-up check of the pinned versions.


def test_the_installed_frameworks_are_the_pinned_versions():
    framework_pins.check()


def test_a_framework_at_another_version_stops_the_app_with_a_readable_error(tmp_path, monkeypatch):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("connexion[flask,swagger-ui]==3.3.0  # pinned\nFlask_Limiter==4.1.1\nrq==2.12.0\n")
    versions = {"connexion": "3.4.0", "Flask-Limiter": "4.1.1", "rq": None}
    with pytest.raises(framework_pins.FrameworkVersionError) as refused:
        framework_pins.check(requirements, ("connexion", "Flask-Limiter", "rq", "redis"), versions.get)
    message = str(refused.value)
    assert "connexion 3.4.0 is installed; requirements.txt pins 3.3.0" in message
    assert "rq is not installed; requirements.txt pins 2.12.0" in message
    assert "redis is not pinned (name==version) in requirements.txt" in message
    assert "Flask-Limiter" not in message  # at its pin, under either spelling
    assert "tests/test_framework_privates.py" in message

    # The factory runs it first: a wrong version never gets as far as building the app.
    from levqor_core import app as app_module

    monkeypatch.setattr(framework_pins, "installed", lambda name: "0.0.1")
    with pytest.raises(framework_pins.FrameworkVersionError, match="connexion 0.0.1 is installed"):
        app_module.create_app({"TESTING": True})


def test_a_missing_requirements_file_is_a_readable_error(tmp_path):
    with pytest.raises(framework_pins.FrameworkVersionError, match="is missing"):
        framework_pins.check(tmp_path / "requirements.txt")


if __name__ == "__main__":
    # Prints the current hash of every "source" entry, to paste after reviewing an upstream change.
    for private in PRIVATES:
        if private.kind == "source":
            try:
                print(f"{source_hash(resolve(private.module, private.name))[:12]}  {private.id}")
            except (ImportError, AttributeError) as err:
                print(f"missing       {private.id}: {err}", file=sys.stderr)
