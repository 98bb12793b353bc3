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
    """(the spec without the async operations, the spec with only them and the components they
    use, their request paths under the spec's own server). The first shares the spec's parts (each
    app parses its own copy); the second is pruned, so the async app resolves no more than it serves."""
    base = next((s["url"] for s in spec.get("servers") or () if s.get("url", "").startswith("/")), "").rstrip("/")
    flask_paths, async_paths, paths = {}, {}, set()
    for path, item in spec.get("paths", {}).items():
        shared = {k: v for k, v in item.items() if k not in contract.METHODS}  # path-level parameters...
        moved = {m: op for m, op in item.items() if m in contract.METHODS and _is_async(op)}
        kept = {m: op for m, op in item.items() if m in contract.METHODS and not _is_async(op)}
        if moved and "{" in path:
            raise ValueError(f"{path}: {HOST_EXTENSION} operations need a fixed path")
        if kept:
            flask_paths[path] = shared | kept
        if moved:
            async_paths[path] = shared | moved
            paths.add(base + path)
    flask_spec = spec | {"paths": flask_paths}
    async_spec = copy.deepcopy({k: v for k, v in spec.items() if k != "x-webhooks"} | {"paths": async_paths})
    contract.prune_components(async_spec)
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
