"""levqor_core.web.framework_costs: work Connexion and Flask did per request, done once per app,
gives the answers the per-request work gave."""

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import yaml
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import SyncParameterDecorator
from connexion.uri_parsing import OpenAPIURIParser
from starlette.routing import Match, Mount
from starlette.testclient import TestClient

from levqor_core.app import ROOT, SPEC
from levqor_core.web import framework_costs
from levqor_core.web.framework_costs import _MATCHED, IndexedRoutingMiddleware, _IndexedRoutes

from .conftest import csrf_from

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _one_by_one(routes, scope):
    """What starlette's Router does: the first full match, else the first partial one."""
    partial = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return match, route, child.get("path_params")
        if match is Match.PARTIAL and partial is None:
            partial = (match, route, child.get("path_params"))
    return partial or (Match.NONE, None, None)


def test_indexed_routes_choose_what_the_router_chose_trying_each_route(cx):
    cx.test_client().get("/api/health")  # builds the middleware stack
    routing = next(m for m in cx.middleware.middleware_stack if isinstance(m, IndexedRoutingMiddleware))
    mounts = [m for m in routing.router.routes if isinstance(m, Mount)]
    assert mounts and all(isinstance(m.app.routes[0], _IndexedRoutes) for m in mounts)

    spec_paths = [re.sub(r"\{[^}]+\}", "x_1", p) for p in yaml.safe_load(SPEC.read_text())["paths"]]
    paths = spec_paths + [p + "/" for p in spec_paths] + ["/v1/nope", "/", "", "/v1/jobs/a/b", "/health/ready/x"]
    compared = 0
    for mount in mounts:
        indexed = mount.app.routes[0]
        for path in paths:
            for method in METHODS:
                scope = {"type": "http", "method": method, "path": "/api" + path, "root_path": "", "headers": []}
                mounted, child = mount.matches(scope)
                if mounted is Match.NONE:
                    continue
                scope = {**scope, **child}
                match, found = indexed.matches(scope)
                expected = _one_by_one(indexed.routes, scope)
                assert (match, found.get(_MATCHED), found.get("path_params")) == expected, (method, path)
                compared += 1
    assert compared >= len(spec_paths) * len(METHODS)


def test_an_operation_builds_its_decorators_once_and_reads_each_calls_own_parameters(client, make_account, monkeypatch):
    _, key = make_account(tier="enterprise")
    built = []
    original = FlaskDecorator.decorate
    monkeypatch.setattr(FlaskDecorator, "decorate", lambda self, fn: built.append(fn) or original(self, fn))
    for _ in range(3):
        assert client.get("/api/health").status_code == 200
    assert len(built) <= 1  # none if an earlier test called the operation already
    for workflow in ("echo", "text-stats", "echo"):
        got = client.get(f"/api/v1/workflows/{workflow}", headers={"x-api-key": key})
        assert got.status_code == 200 and got.json()["id"] == workflow
    assert len(built) <= 2


def test_the_served_app_leaves_what_start_up_built_out_of_the_collectors_passes(redis_server, database_url):
    """wsgi.py freezes the start-up objects: a full collection then scans only what requests made."""
    probe = (
        "import gc, time, wsgi; frozen = gc.get_freeze_count(); t = time.perf_counter(); gc.collect(); "
        "print(frozen, time.perf_counter() - t)"
    )
    env = {**os.environ, "REDIS_URL": redis_server.url, "DATABASE_URL": database_url, "SECRET_KEY": "t"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, seconds = done.stdout.split()[-2:]
    assert int(frozen) > 50_000  # the app, its extensions and the spec
    assert float(seconds) < 0.04  # unfrozen: ~85 ms on the 2-core machine


def test_handlers_taking_nothing_or_only_string_path_parameters_skip_the_parameter_decorator(
    client, make_account, monkeypatch
):
    _, key = make_account(tier="enterprise")
    read = []
    original = SyncParameterDecorator._maybe_get_body
    monkeypatch.setattr(
        SyncParameterDecorator, "_maybe_get_body", lambda self, *a, **kw: read.append(1) or original(self, *a, **kw)
    )
    listed = client.get("/api/v1/workflows", headers={"x-api-key": key})
    assert listed.status_code == 200 and {w["id"] for w in listed.json()["data"]} >= {"echo", "text-stats"}
    assert client.get("/api/health").json()["status"] == "ok"
    assert read == []  # list_workflows() and get_health() take nothing: no request parsed for them
    # get_workflow(workflow_id) and get_job(job_id): each gets its own call's path parameter from Flask's match.
    for workflow in ("echo", "text-stats"):
        one = client.get(f"/api/v1/workflows/{workflow}", headers={"x-api-key": key})
        assert one.status_code == 200 and one.json()["id"] == workflow
    missing = client.get("/api/v1/workflows/no-such-flow", headers={"x-api-key": key})
    assert missing.status_code == 404 and "no-such-flow" in missing.json()["detail"]
    job = client.post("/api/v1/jobs", headers={"x-api-key": key}, json={"workflow": "echo", "input": {}}).json()
    assert read == [1]  # the submit takes a body: Connexion's decorator
    polled = client.get(f"/api/v1/jobs/{job['id']}", headers={"x-api-key": key})
    assert polled.status_code == 200 and polled.json()["id"] == job["id"] and read == [1]
    # A query parameter: Connexion's decorator, which converts and defaults it.
    page = client.get("/api/v1/jobs?limit=1", headers={"x-api-key": key})
    assert page.status_code == 200 and [j["id"] for j in page.json()["data"]] == [job["id"]] and read == [1, 1]


def test_takes_nothing_needs_no_arguments_no_kwargs_and_no_path_parameters():
    def nothing():
        pass

    def anything(**kwargs):
        pass

    def one(workflow_id):
        pass

    query, path = {"in": "query", "name": "q"}, {"in": "path", "name": "id"}
    assert framework_costs.takes_nothing(nothing, SimpleNamespace(parameters=[query]))
    assert not framework_costs.takes_nothing(nothing, SimpleNamespace(parameters=[query, path]))  # Connexion passes it
    assert not framework_costs.takes_nothing(anything, SimpleNamespace(parameters=[]))
    assert not framework_costs.takes_nothing(one, SimpleNamespace(parameters=[]))


def test_path_arguments_only_where_connexion_would_pass_the_matched_strings_and_nothing_else():
    def by_id(*, job_id):
        pass

    def anything(**kwargs):
        pass

    def with_user(job_id, user):
        pass

    def two(a_id, b_id):
        pass

    def hyphen(**kwargs):
        pass

    def path(name, schema=None, **extra):
        return {"in": "path", "name": name, "schema": schema or {"type": "string", "pattern": "^x$"}, **extra}

    def op(*parameters, body=None):
        return SimpleNamespace(parameters=list(parameters), request_body=body or {})

    assert framework_costs.path_arguments(by_id, op(path("job_id"))) == ["job_id"]
    assert framework_costs.path_arguments(two, op(path("b_id"), path("a_id"))) == ["b_id", "a_id"]
    assert framework_costs.path_arguments(anything, op(path("job_id"))) is None  # **kwargs: context too
    assert framework_costs.path_arguments(with_user, op(path("job_id"))) is None  # a context argument
    assert framework_costs.path_arguments(by_id, op(path("job_id"), {"in": "query", "name": "q"})) is None
    assert framework_costs.path_arguments(by_id, op(path("job_id"), {"in": "header", "name": "h"})) is None
    assert framework_costs.path_arguments(by_id, op(path("job_id"), body={"content": {}})) is None
    assert framework_costs.path_arguments(by_id, op(path("job_id", {"type": "integer"}))) is None  # converted
    assert framework_costs.path_arguments(by_id, op(path("job_id", {"type": "string", "format": "path"}))) is None
    assert framework_costs.path_arguments(hyphen, op(path("job-id"))) is None  # renamed by Connexion
    nullable = {"type": "string", "nullable": True}
    assert framework_costs.path_arguments(by_id, op(path("job_id", nullable))) is None  # "null" becomes None
    assert framework_costs.path_arguments(by_id, op()) is None  # takes_nothing's case, or a mismatch


def test_connexion_resolves_each_path_only_operations_parameters_to_the_matched_string():
    """On the fast path a handler gets Flask's matched string; Connexion's parameter decorator would
    have passed it through its URI parser: for every such operation of the spec, the same value."""
    spec = yaml.safe_load(SPEC.read_text())
    shared = spec["components"]["parameters"]
    checked = 0
    for path_item in spec["paths"].values():
        for method, operation in path_item.items():
            if method == "parameters":
                continue
            parameters = [
                shared[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
                for p in path_item.get("parameters", []) + operation.get("parameters", [])
            ]
            if not parameters or "requestBody" in operation or any(p["in"] != "path" for p in parameters):
                continue
            parser = OpenAPIURIParser(parameters, {})
            for value in ("job_0123456789abcdef0123", "a,b", "é ü", "a b", "[1]", "-"):
                matched = {p["name"]: value for p in parameters}
                assert parser.resolve_path(dict(matched)) == matched, (method, parameters)
            checked += 1
    assert checked >= 8  # jobs, workflows and webhook endpoints, live and sandbox


def test_flask_limiters_hooks_run_only_where_a_limit_was_checked(client, cx, make_account, monkeypatch):
    from flask_limiter import Limiter

    _, key = make_account(tier="enterprise")
    contexts = []
    original = Limiter.context.fget
    monkeypatch.setattr(Limiter, "context", property(lambda self: contexts.append(1) or original(self)))
    assert client.get("/api/v1/workflows", headers={"x-api-key": key}).status_code == 200
    assert client.get("/api/health").status_code == 200
    assert contexts == []  # no limit on these: Flask-Limiter's after-request and teardown hooks stayed out
    # A limited portal page still gets the limit's headers, and Flask-Limiter's state is released.
    page = TestClient(cx, follow_redirects=False, client=("198.51.100.77", 40000))
    token = csrf_from(page.get("/login").text)
    tried = page.post("/login", data={"email": "nobody@example.com", "password": "nope", "csrf_token": token})
    assert tried.status_code == 401 and contexts
    assert tried.headers["X-RateLimit-Limit"] == "10" and tried.headers["X-RateLimit-Remaining"] == "9"
    assert tried.headers["RateLimit-Policy"].endswith(";q=10;w=60")
