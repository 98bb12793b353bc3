"""`/api/openapi.json` (and `.yaml`) serve the public spec (levqor_core.spec.public) while the app
routes and validates every operation of the full one.

Connexion's SwaggerUIMiddleware serves the very spec the API was added with, rebuilt (copied,
validated, its refs resolved) on every request. This one builds the public copy once per base
path, the first time it is asked for, and serves those bytes after that.
"""

from functools import partial

from connexion.jsonifier import Jsonifier
from connexion.middleware.swagger_ui import SwaggerUIAPI, SwaggerUIMiddleware
from connexion.utils import yamldumper
from starlette.responses import Response

from levqor_core import spec as contract


class _PublicSpecAPI(SwaggerUIAPI):
    def __init__(self, specification, *args, **kwargs):
        # Before super(): it adds the routes, which read these.
        self._public = type(specification)(contract.public(specification.raw))
        self._served: dict[tuple[str, str], bytes] = {}
        super().__init__(specification, *args, **kwargs)

    def _public_spec(self, request) -> dict:
        return self._public.with_base_path(self._base_path_for_prefix(request)).spec

    def _rendered(self, request, kind: str) -> bytes:
        # The base path comes from the server's mount (root_path), not from the client.
        key = (kind, self._base_path_for_prefix(request))
        body = self._served.get(key)
        if body is None:
            spec = self._public_spec(request)
            text = Jsonifier().dumps(spec) if kind == "json" else yamldumper(spec)
            body = self._served[key] = text.encode()
        return body

    async def _get_openapi_json(self, request):
        return Response(self._rendered(request, "json"), media_type="application/json")

    async def _get_openapi_yaml(self, request):
        return Response(self._rendered(request, "yaml"), media_type="text/yaml")


class PublicSpecMiddleware(SwaggerUIMiddleware):
    """SwaggerUIMiddleware serving the public spec: of `served` (the whole contract) when this app
    routes only part of it (the streams are served beside it: levqor_core.web.stream_host)."""

    def __init__(self, app, served: dict | None = None):
        super().__init__(app)
        self._served_spec = served

    def add_api(self, specification, base_path=None, arguments=None, **kwargs) -> None:
        if self._served_spec is not None:
            specification = type(specification)(self._served_spec)
        api = _PublicSpecAPI(specification, base_path=base_path, arguments=arguments, default=self.default_fn, **kwargs)
        self.router.mount(api.base_path, app=api.router)

    async def __call__(self, scope, receive, send) -> None:
        # Connexion's middleware copies every request's scope and runs it through two routers (the
        # mount, then the spec's two routes) to reach the next layer; only a path naming one of
        # the spec's files (`…/openapi.json`, `…/openapi.yaml`, and their slash redirects) can end
        # anywhere else, so every other request goes straight on.
        if scope["type"] == "http" and "/openapi." not in scope["path"]:
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def middlewares(stack: list, served: dict | None = None) -> list:
    """Connexion's middleware stack with this one in the place of SwaggerUIMiddleware; `served`:
    the spec to publish, when the app is given only part of it."""
    assert SwaggerUIMiddleware in stack, "Connexion's stack changed: the spec would not be served"
    public = partial(PublicSpecMiddleware, served=served) if served is not None else PublicSpecMiddleware
    return [public if m is SwaggerUIMiddleware else m for m in stack]
