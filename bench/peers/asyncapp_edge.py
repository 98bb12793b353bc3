"""A bench-only prototype of the API's hot path on Connexion's AsyncApp, with the app's real edge:
what the API would cost if it moved off FlaskApp (docs/decisions/0014-api-host.md). Not the app.

Mounted as the move would mount it (STACK-NOTES "Hosts for the API"):
    Starlette(routes=[Mount("/api", AsyncApp), Mount("/", a2wsgi(the portal's Flask app))])
The AsyncApp is given openapi/openapi.yaml without its `servers` (the Mount strips `/api`), the
app's request guard (levqor_core.web.request_guard) at the same place in Connexion's stack, the
app's middleware stack (indexed routing, the public spec), validators, apiKey handler and JSON
encoder, its security functions (handlers.security: the gate's `authorize_async`, so burst limit,
quota, metering and rate-limit headers are the app's), and its problem+json error handlers.
What is new is only the handlers, `async def`, for three operations:
  - GET /health, GET /v1/workflows: the core's answer, on the event loop;
  - GET /v1/jobs/{job_id}: the core's read (levqor_core.apijobs.jobs.read, Flask-SQLAlchemy's
    engine) in a worker thread (asyncio.to_thread) inside the Flask app's context; in the
    built-once variant, the same SELECT on an async psycopg pool on the event loop.
Every other operation of the spec is routed, validated and authenticated as in the app and then
answers 501: its handler still uses Flask's request, Flask-Login or db.session.

The real app is built first (levqor_core.app.create_app, on the first read of `app`) for its Flask
app: the gate, the request log, Redis and the configuration hang on it. Environment as for the
app's web line; served like it:
gunicorn -k uvicorn_worker.UvicornWorker -w 2 --chdir bench/peers asyncapp_edge:app
"""

import asyncio
import functools
import gc
import json
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import connexion  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from a2wsgi import WSGIMiddleware  # noqa: E402
from connexion.apps.asynchronous import AsyncApi, AsyncOperation  # noqa: E402
from connexion.context import context  # noqa: E402
from connexion.context import operation as connexion_operation  # noqa: E402
from connexion.context import receive as connexion_receive  # noqa: E402
from connexion.context import scope as connexion_scope  # noqa: E402
from connexion.decorators import StarletteDecorator  # noqa: E402
from connexion.jsonifier import Jsonifier  # noqa: E402
from connexion.middleware import MiddlewarePosition  # noqa: E402
from connexion.options import SwaggerUIOptions  # noqa: E402
from connexion.resolver import Resolver  # noqa: E402
from flask import Flask  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from handlers._reply import ok  # noqa: E402
from levqor_core import errors, problems  # noqa: E402
from levqor_core import spec as contract  # noqa: E402
from levqor_core.apijobs import jobs, workflows  # noqa: E402
from levqor_core.apijobs.models import public_job  # noqa: E402
from levqor_core.app import SPEC, create_app  # noqa: E402
from levqor_core.web import framework_costs, public_spec, validation  # noqa: E402
from levqor_core.web.request_guard import RequestGuard, body_limits  # noqa: E402

flask_app: Flask  # the real app's, set by build()


async def get_health():
    """Liveness: the process answers."""
    return ok({"status": "ok", "version": flask_app.config["API_VERSION"]})


async def list_workflows():
    """The workflow catalogue."""
    return ok(workflows.listing())


def _read_job(account_id: int, job_id: str) -> dict:
    with flask_app.app_context():
        return jobs.read(account_id, job_id)


async def get_job(*, job_id: str):
    """One of the caller's jobs: the core's read in a worker thread."""
    return ok(await asyncio.to_thread(_read_job, context["token_info"]["account_id"], job_id))


_pool = None  # psycopg_pool.AsyncConnectionPool, opened on this worker's event loop at its first poll
_pool_opening = asyncio.Lock()


async def _poll_pool():
    global _pool
    if _pool is None:
        async with _pool_opening:
            if _pool is None:
                from psycopg_pool import AsyncConnectionPool

                url = flask_app.config["SQLALCHEMY_DATABASE_URI"].replace("postgresql+psycopg://", "postgresql://")
                pool = AsyncConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False)
                await pool.open()
                _pool = pool
    return _pool


_poll_dialect = sa.create_engine("postgresql+psycopg://").dialect  # the app's driver: the same statement


async def get_job_on_the_loop(*, job_id: str):
    """One of the caller's jobs: the same SELECT as the core's read, on an async connection on the
    event loop (no thread hand-off). The built-once variant serves this one."""
    params = {"job_id": job_id, "account_id": context["token_info"]["account_id"]}
    async with (await _poll_pool()).connection() as connection:
        cursor = await connection.execute(jobs.poll_sql(_poll_dialect), params)
        row = await cursor.fetchone()
    if row is None:
        raise problems.NotFound(f"No job {job_id!r} in this account.")
    return ok(public_job(jobs.PublicRow._make(row)))


async def not_in_prototype(**_kwargs):
    """Every operation the prototype has no async handler for."""
    raise problems.Problem(501, "Not implemented", "Not in the AsyncApp prototype (bench only).")


HANDLERS = {"get_health": get_health, "list_workflows": list_workflows, "get_job": get_job}


def handler_for(operation_id: str):
    """The prototype's handler for a routed operation id (`handlers.<module>.<operationId>`)."""
    return HANDLERS.get(operation_id.rsplit(".", 1)[-1], not_in_prototype)


def built_once_handler_for(operation_id: str):
    """The same, with the job poll's read on the event loop."""
    if operation_id.rsplit(".", 1)[-1] == "get_job":
        return get_job_on_the_loop
    return handler_for(operation_id)


class _BuiltOnceDecorator(StarletteDecorator):
    """StarletteDecorator with its chain built on an operation's first call: AsyncApp builds the
    decorator, the URI parser and the parameter and response decorators again for every call. A
    handler that takes nothing skips the parameter decorator. The AsyncApp twin of what
    levqor_core.web.framework_costs does for FlaskApp (decision 0001); measured as a lever only."""

    def __call__(self, function):
        built = None

        @functools.wraps(function)
        async def wrapper(*args, **kwargs):
            nonlocal built
            if built is None:  # the operation's context is set by now (the URI parser reads it)
                built = self._build(function)
            return await built()

        return wrapper

    def _build(self, function):
        if framework_costs.takes_nothing(function, connexion_operation):
            respond = self._response_decorator_cls(framework=self.framework, jsonifier=self.jsonifier)
            return respond(self._sync_async_decorator(function))
        uri_parser, decorated = self.uri_parser, self.decorate(function)
        get_request = self.framework.get_request
        return lambda: decorated(get_request(uri_parser=uri_parser, scope=connexion_scope, receive=connexion_receive))


class _BuiltOnceOperation(AsyncOperation):
    @functools.cached_property
    def fn(self):
        return _BuiltOnceDecorator(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class _BuiltOnceApi(AsyncApi):
    def make_operation(self, operation):
        return _BuiltOnceOperation.from_operation(
            operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier
        )


def build(app_of_the_core: Flask, built_once: bool = False) -> Starlette:
    """The API on AsyncApp under /api, the portal's Flask app beside it, as one ASGI app; with
    `built_once`, AsyncApp's per-call decorator building done once per operation (a lever)."""
    global flask_app
    flask_app = app_of_the_core
    api = build_api(built_once)
    return Starlette(routes=[Mount("/api", app=api), Mount("/", app=WSGIMiddleware(flask_app))])


def build_api(built_once: bool = False) -> connexion.AsyncApp:
    spec = contract.load(SPEC)
    guard_limits = body_limits(spec)  # under /api: the guard sees the path before the Mount's strip
    spec.pop("servers", None)  # with `servers: [{url: /api}]` behind Mount("/api"), every call 404s
    validate_responses = flask_app.config["VALIDATE_RESPONSES"]
    api = connexion.AsyncApp(
        __name__,
        middlewares=public_spec.middlewares(framework_costs.middlewares(validate_responses)),
        resolver=Resolver(function_resolver=built_once_handler_for if built_once else handler_for),
    )
    if built_once:
        api._middleware_app.api_cls = _BuiltOnceApi  # read by add_api when the stack is built
    api.add_api(
        spec,
        strict_validation=True,
        validate_responses=validate_responses,
        pythonic_params=False,
        jsonifier=Jsonifier(json, separators=(",", ":")),
        validator_map=validation.validator_map(),
        security_map=framework_costs.SECURITY_MAP,
        swagger_ui_options=SwaggerUIOptions(serve_spec=True, swagger_ui=False),
    )
    api.add_middleware(
        RequestGuard,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        flask_app=flask_app,
        max_body_bytes=flask_app.config["MAX_BODY_BYTES"],
        body_limits=guard_limits,
        redis_client=flask_app.extensions["levqor.redis"],
        stats_flush_seconds=flask_app.config["STATS_FLUSH_SECONDS"],
    )
    # The app's problem+json handlers as they are; the Flask-side ones (Flask-Limiter's 429, CSRF,
    # Werkzeug's redirects) belong to the portal and go on a Flask app that is never served here.
    errors.register_error_handlers(types.SimpleNamespace(app=Flask("unused"), add_error_handler=api.add_error_handler))
    return api


def __getattr__(name: str):
    # `asyncapp_edge:app` for gunicorn builds the real app (from the environment) on first access;
    # bench/cpu.py imports this module and calls build() with its own.
    # `asyncapp_edge:app_built_once` serves the lever (_BuiltOnceDecorator) instead.
    if name not in ("app", "app_built_once"):
        raise AttributeError(name)
    served = build(create_app().app, built_once=name == "app_built_once")
    globals()[name] = served
    gc.freeze()  # as wsgi.py does
    return served
