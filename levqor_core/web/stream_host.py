"""The stream operations' host: a Connexion AsyncApp beside the FlaskApp, from the same spec.

Flask runs each handler in a thread, and a Server-Sent Events stream lasts minutes: one thread per
stream would starve the API. The operations marked `x-levqor-host: async` in the spec are routed,
validated and secured by a Connexion `AsyncApp` given only them (their `async def` handlers stream
from the event loop); the FlaskApp is given the spec without them. The spec stays the one route
table, and /api/openapi.json still publishes the whole contract (public_spec's `served`).

`StreamDispatch` sits in the FlaskApp's middleware stack right inside the request guard: the guard
has already started the request's state (Request-Id, security headers, the request log), so a
stream's response carries the same headers as every other API answer, and the security function
finds the same state and gate (handlers.security). Their paths are fixed, so dispatch is one set
lookup per request.
"""

import copy
import json

import connexion
from connexion.jsonifier import Jsonifier
from connexion.options import SwaggerUIOptions

from levqor_core import errors
from levqor_core import spec as contract
from levqor_core.web import framework_costs, validation

HOST_EXTENSION = "x-levqor-host"
ASYNC = "async"


def _is_async(operation) -> bool:
    return isinstance(operation, dict) and operation.get(HOST_EXTENSION) == ASYNC


def split(spec: dict) -> tuple[dict, dict, frozenset[str]]:
    """(the spec without the async operations, the spec with only them, their request paths under
    the spec's own server)."""
    base = next((s["url"] for s in spec.get("servers") or () if s.get("url", "").startswith("/")), "").rstrip("/")
    flask_spec, async_spec = copy.deepcopy(spec), copy.deepcopy(spec)
    paths: set[str] = set()
    for path, item in spec.get("paths", {}).items():
        for method in contract.METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            if _is_async(operation):
                if "{" in path:
                    raise ValueError(f"{method.upper()} {path}: {HOST_EXTENSION} operations need a fixed path")
                del flask_spec["paths"][path][method]
                paths.add(base + path)
            else:
                del async_spec["paths"][path][method]
    for served in (flask_spec, async_spec):
        served["paths"] = {p: item for p, item in served["paths"].items() if any(m in item for m in contract.METHODS)}
    return flask_spec, async_spec, frozenset(paths)


def build(async_spec: dict, validate_responses: bool) -> connexion.AsyncApp:
    """The AsyncApp serving the async operations, with the API's validation, security and problems."""
    app = connexion.AsyncApp(__name__, middlewares=framework_costs.middlewares(validate_responses))
    app.add_api(
        async_spec,
        strict_validation=True,
        validate_responses=validate_responses,
        pythonic_params=False,
        jsonifier=Jsonifier(json, separators=(",", ":")),
        validator_map=validation.validator_map(),
        security_map=framework_costs.SECURITY_MAP,
        swagger_ui_options=SwaggerUIOptions(serve_spec=False, swagger_ui=False),
    )
    errors.register_api_error_handlers(app)
    return app


class StreamDispatch:
    """The async operations' paths to the AsyncApp, everything else on through the FlaskApp."""

    def __init__(self, app, streams_app, paths: frozenset[str]):
        self.app = app
        self.streams_app = streams_app
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] in self.paths:
            await self.streams_app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
