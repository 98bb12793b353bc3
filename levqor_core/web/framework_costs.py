"""Work Connexion and Flask redo on every request that can be done once per app.

- Connexion's FlaskOperation builds its decorator chain (parameter and response decorators, four
  functools.wraps, an inspect.signature of the handler) and a URI parser again for every call;
  all of it depends only on the operation, so it is built on the operation's first call. A
  handler that takes no arguments for an operation without path parameters skips the parameter
  decorator: it would wrap the request, read its content type, collect its files and query
  parameters and work out every argument, to pass none. A handler that takes only its string path
  parameters (the job poll) gets them from Flask's match, as Connexion would have passed them.
- Flask asks `ensure_sync` of every hook and view on every request (an inspect of each); the
  answer for a given function never changes.
- Connexion's router tries the API's routes one by one (a path regex each); they are indexed by
  path, keeping the router's answer (first full match, in route order); a path that matches with
  another method is a 405 listing every operation's method on that path.
- The response validation layer is left out of the stack where responses are not validated (and
  lets HEAD answers through where they are).
- Connexion's apiKey security handler inspected the security function's signature on each call.
- Flask runs behind levqor_core.web.wsgi_bridge instead of a2wsgi: one hand-off from Flask's
  thread to the event loop per response instead of three round trips.

Both measured in process with bench/cpu.py (README "Speed"); the suite (every operation, the fuzz
included) runs through them.
"""

import asyncio
import functools
import typing as t

import connexion
import flask
from connexion.apps.flask import FlaskApi, FlaskOperation
from connexion.context import operation as connexion_operation
from connexion.decorators import FlaskDecorator
from connexion.decorators.parameter import unwrap_decorators
from connexion.exceptions import OAuthResponseProblem
from connexion.middleware.main import ConnexionMiddleware
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.middleware.routing import RoutingMiddleware
from connexion.security import NO_VALUE, ApiKeySecurityHandler
from connexion.utils import inspect_function_arguments
from flask import Flask
from starlette._utils import get_route_path
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, Router

from levqor_core.web.wsgi_bridge import WSGIBridge


def takes_nothing(function: t.Callable, operation) -> bool:
    """Connexion would call this handler with no arguments, whatever the request."""
    arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
    return not arguments and not has_kwargs and not any(p["in"] == "path" for p in operation.parameters)


def path_arguments(function: t.Callable, operation) -> list[str] | None:
    """The names of the path parameters Connexion would pass this handler, and nothing else, when
    that is all it would ever pass: no query, header or cookie parameters, no body, no context
    arguments, each path parameter a plain string whose name is already a Python identifier (so
    Connexion would neither rename, split nor convert it). None otherwise."""
    arguments, has_kwargs = inspect_function_arguments(unwrap_decorators(function))
    parameters = operation.parameters
    if has_kwargs or operation.request_body or not parameters or any(p["in"] != "path" for p in parameters):
        return None
    names = [p["name"] for p in parameters]
    if sorted(arguments) != sorted(names):
        return None
    for parameter in parameters:
        schema = parameter.get("schema", {})
        plain = schema.get("type") == "string" and "format" not in schema and not schema.get("nullable")
        if not (plain and parameter["name"].isidentifier()):
            return None  # Connexion would rename it, or convert it (a number, a file, "null" to None)
    return names


class _BuiltOnceDecorator(FlaskDecorator):
    """FlaskDecorator, with the chain and URI parser built on the first call instead of each."""

    def __call__(self, function: t.Callable) -> t.Callable:
        built = None

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            nonlocal built
            if built is None:  # the operation's context is set by now (the URI parser reads it)
                built = self._build(function)
            return built()

        return wrapper

    def _build(self, function: t.Callable) -> t.Callable[[], t.Any]:
        if takes_nothing(function, connexion_operation):
            respond = self._response_decorator_cls(framework=self.framework, jsonifier=self.jsonifier)
            return respond(self._sync_async_decorator(function))
        names = path_arguments(function, connexion_operation)
        if names is not None:
            # Connexion's parameter decorator would wrap the request, read its content type, collect
            # its files and query parameters and resolve each path parameter to the same string
            # Flask matched (~160 µs of the job poll's CPU, bench/cpu_job_poll.py); the request
            # validation layer has checked each one against the spec already.
            respond = self._response_decorator_cls(framework=self.framework, jsonifier=self.jsonifier)
            call = respond(self._sync_async_decorator(function))
            return lambda: call(**{name: flask.request.view_args[name] for name in names})
        uri_parser, decorated = self.uri_parser, self.decorate(function)
        get_request = self.framework.get_request
        return lambda: decorated(get_request(uri_parser=uri_parser))


class _Operation(FlaskOperation):
    @functools.cached_property
    def fn(self) -> t.Callable:
        return _BuiltOnceDecorator(pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)(self._fn)


class _Api(FlaskApi):
    def make_operation(self, operation):
        return _Operation.from_operation(operation, pythonic_params=self.pythonic_params, jsonifier=self.jsonifier)


def install(cx: connexion.FlaskApp) -> None:
    """Before add_api: the app's operations and hooks do their per-app work once."""
    inner = cx._middleware_app

    def add_api(specification, *, name: str | None = None, **kwargs):
        # connexion.apps.flask.FlaskASGIApp.add_api, with the operations above.
        api = _Api(specification, **kwargs)
        inner.app.register_blueprint(api.blueprint, **({"name": name} if name is not None else {}))
        return api

    inner.add_api = add_api
    inner.asgi_app = WSGIBridge(inner.app.wsgi_app)
    _cache_ensure_sync(cx.app)


def _cache_ensure_sync(app: Flask) -> None:
    original = app.ensure_sync
    known: dict = {}

    def ensure_sync(func):
        try:
            return known[func]
        except KeyError:
            pass
        except TypeError:  # unhashable: asked each time, as before
            return original(func)
        answer = original(func)
        if len(known) < 1024:  # bound methods (hooks on extensions) are equal by value, not new keys
            known[func] = answer
        return answer

    app.ensure_sync = ensure_sync


class _IndexedRoutes(BaseRoute):
    """Stands in for a router's routes: asks only those that can match the path (the routes with
    exactly this path, and every route with path parameters), in their original order, so the
    answer is the router's own. The API's router would otherwise try its ~35 routes one by one."""

    def __init__(self, routes: list):
        self.routes = routes
        fixed: dict[str, list] = {}
        open_ended = []
        for i, route in enumerate(routes):
            if isinstance(route, Route) and not route.param_convertors:
                fixed.setdefault(route.path, []).append((i, route))
            else:
                open_ended.append((i, route))
        self._open_ended = [route for _, route in open_ended]
        self._by_path = {path: [route for _, route in sorted(found + open_ended)] for path, found in fixed.items()}

    def matches(self, scope):
        if scope["type"] != "http":
            return Match.NONE, {}
        partial, allowed = None, set()
        for route in self._by_path.get(get_route_path(scope), self._open_ended):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return match, {**child_scope, _MATCHED: route}
            if match is Match.PARTIAL:
                allowed |= route.methods or set()
                if partial is None:
                    partial = {**child_scope, _MATCHED: route}
        if partial is not None:
            return Match.PARTIAL, {**partial, _ALLOWED: allowed}
        return Match.NONE, {}

    async def handle(self, scope, receive, send):
        route = scope.pop(_MATCHED)
        allowed = scope.pop(_ALLOWED, None)
        scope["route"] = route
        if allowed is not None:
            # The path matched, the method did not. Connexion makes one route per operation, and
            # Starlette's 405 would list only the first one's methods (`OPTIONS /api/v1/jobs`
            # answered `Allow: POST`, hiding GET): the path's operations together are its methods.
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params):
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


_MATCHED = "levqor.route"
_ALLOWED = "levqor.allowed_methods"


class IndexedRoutingMiddleware(RoutingMiddleware):
    """Connexion's routing, each API's routes indexed by path (_IndexedRoutes)."""

    def add_api(self, *args, **kwargs) -> None:
        super().add_api(*args, **kwargs)
        for mount in self.router.routes:
            router = getattr(mount, "app", None)
            if isinstance(router, Router) and not any(isinstance(r, _IndexedRoutes) for r in router.routes):
                router.routes = [_IndexedRoutes(router.routes)]


class ResponseValidationExceptHead(ResponseValidationMiddleware):
    """Connexion's response validation, which lets HEAD answers through: they carry the GET's
    headers and no body (RFC 9110 9.3.2), and Connexion parsed that empty body as the GET's JSON,
    so `HEAD` on any API `GET` was a 500 wherever responses are validated (`make run`, the suite)."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def middlewares(validate_responses: bool) -> list:
    """Connexion's default middleware stack with the indexed routing, and without the response
    validation layer where responses are not validated (it would only pass each call through)."""
    replaced = {RoutingMiddleware: IndexedRoutingMiddleware, ResponseValidationMiddleware: ResponseValidationExceptHead}
    stack = [replaced.get(m, m) for m in ConnexionMiddleware.default_middlewares]
    if not validate_responses:
        stack.remove(ResponseValidationExceptHead)
    return stack


class ApiKeyHandler(ApiKeySecurityHandler):
    """Connexion's apiKey handler, with the security function's signature read once: Connexion's
    wrapper inspected it twice on every call it checked.

    A security function marked `answers_missing_credentials` is also called when its header is
    absent (with None), so it can refuse with its own problem: Connexion would answer "No
    authorization token provided" typed as an invalid API key, to GitHub's signature too."""

    def _get_verify_func(self, api_key_info_func, loc, name, required_scopes):
        verify = super()._get_verify_func(api_key_info_func, loc, name, required_scopes)
        if not getattr(api_key_info_func, "answers_missing_credentials", False):
            return verify
        check = self.check_api_key(api_key_info_func)

        def wrapper(request):
            found = verify(request)
            return check(request, None, required_scopes=required_scopes) if found is NO_VALUE else found

        return wrapper

    def _generic_check(self, func, exception_msg):
        pass_scopes = self._accepts_kwarg(func, self.required_scopes_kw)
        pass_request = self._accepts_kwarg(func, self.request_kw)
        scopes_kw, request_kw = self.required_scopes_kw, self.request_kw

        async def wrapper(request, *args, required_scopes=None):
            # connexion.security.AbstractSecurityHandler._generic_check's wrapper, otherwise as is.
            kwargs = {}
            if pass_scopes:
                kwargs[scopes_kw] = required_scopes
            if pass_request:
                kwargs[request_kw] = request
            token_info = func(*args, **kwargs)
            while asyncio.iscoroutine(token_info):
                token_info = await token_info
            if token_info is NO_VALUE:
                return NO_VALUE
            if token_info is None:
                raise OAuthResponseProblem(detail=exception_msg)
            return token_info

        return wrapper


SECURITY_MAP = {"apiKey": ApiKeyHandler}
