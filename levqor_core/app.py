"""The app factory: the Connexion (ASGI) app around the Flask app, wired from the domain core."""

import json
import logging
from pathlib import Path

import connexion
from connexion.context import context as connexion_context
from connexion.context import operation as connexion_operation
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from flask import Flask, redirect, request, url_for
from htmx_flask import Htmx
from werkzeug.utils import import_string

from levqor_core import config, errors, framework_pins, postman, problems, redis_conn, tables  # noqa: F401  (tables: every model)
from levqor_core import spec as contract
from levqor_core.accounts import security as account_security
from levqor_core.extensions import csrf, db, migrate
from levqor_core.keys import github_signature
from levqor_core.keys import retired_streams as _ends_retired_keys_streams  # noqa: F401  (a receiver)
from levqor_core.limits import gate
from levqor_core.metering import card as usage_card  # noqa: F401  (its signal receiver)
from levqor_core.requestlog.recorder import Recorder
from levqor_core.web import deprecation, framework_costs, public_spec, request_log, stream_host, streams, validation
from levqor_core.web.api_paths import is_api_path
from levqor_core.web.limiter import init_app as init_limiter
from levqor_core.web.request_guard import RequestGuard, body_limits
from levqor_core.web.sessions import CookieSessionsOnlyWhenSent, anonymous_without_credentials

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi" / "openapi.yaml"
SESSION_SCHEME = "SessionCookie"  # the spec's security scheme for the portal's session cookie
PORTAL_BLUEPRINTS = ("portal.views:bp", "portal.views.billing:bp", "portal.views.ops:bp", "portal.views.webhooks:bp")


def create_app(test_config: dict | None = None) -> connexion.FlaskApp:
    """Build the Connexion app (ASGI) around the Flask app; settings from the environment."""
    framework_pins.check()  # the frameworks whose internals the app uses, at the pinned versions
    settings = config.from_env()
    settings.update(test_config or {})
    settings["SQLALCHEMY_ENGINE_OPTIONS"] = config.engine_options(settings)
    settings["SQLALCHEMY_BINDS"] = config.binds(settings)
    logging.basicConfig(level=settings["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    spec = contract.load(SPEC)  # read once: routing, /api/openapi.json, deprecation headers
    # The streams (x-levqor-host: async) are served by an AsyncApp beside Flask (web.stream_host).
    flask_spec, async_spec, stream_paths = stream_host.split(spec)
    cx = connexion.FlaskApp(
        __name__,
        specification_dir=str(SPEC.parent),
        # /api/openapi.json serves the public spec (no x-internal operations) of the whole contract.
        middlewares=public_spec.middlewares(framework_costs.middlewares(settings["VALIDATE_RESPONSES"]), served=spec),
    )
    framework_costs.install(cx)  # per-app work Connexion and Flask would redo on every request
    app: Flask = cx.app
    app.config.update(settings)
    app.config["API_VERSION"] = spec["info"]["version"]
    app.template_folder = str(ROOT / "portal" / "templates")
    # The portal's static files (its blueprint's /assets, the npm files at /vendor) and Flask's own.
    app.session_interface = CookieSessionsOnlyWhenSent(asset_endpoints={"static", "portal.static", "portal.vendor"})

    register_extensions(app)
    # Which limit each operation's key calls count against (the spec's x-levqor-area).
    app.extensions["levqor.operation_areas"] = contract.operation_areas(spec)
    # Whose answer the gate may read with its round trip (the spec's x-levqor-held-answer).
    app.extensions["levqor.held_answers"] = contract.held_answer_operations(spec)
    # /api/postman.json: built at setup (openapi/postman.py), served as read here.
    collection = postman.load()
    app.extensions["levqor.postman"] = collection and postman.served(collection, app.config["PUBLIC_BASE_URL"] + "/api")
    cx.add_api(
        flask_spec,
        strict_validation=True,
        # The suite validates every response (tests/conftest.py turns this on, and the fuzz checks
        # each answer against the spec); in production it cost ~9% of every call (README "Speed").
        validate_responses=app.config["VALIDATE_RESPONSES"],
        pythonic_params=False,
        # Compact output keeps json on its C encoder (Connexion's default indent=2 does not).
        jsonifier=Jsonifier(json, separators=(",", ":")),
        validator_map=validation.validator_map(),
        security_map=framework_costs.SECURITY_MAP,
        # /docs/api is the one reference (CSP, frame denial, "Try it out" on the sandbox); Connexion's
        # bundled Swagger UI at /api/ui/ had none of that and called production.
        swagger_ui_options=SwaggerUIOptions(serve_spec=True, swagger_ui=False),
    )
    cx.add_middleware(
        RequestGuard,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        flask_app=app,
        max_body_bytes=settings["MAX_BODY_BYTES"],
        body_limits=body_limits(spec),
        redis_client=app.extensions["levqor.redis"],
        stats_flush_seconds=app.config["STATS_FLUSH_SECONDS"],
    )
    # Inside the guard, so a stream carries the Request-Id and headers every answer does.
    cx.add_middleware(
        stream_host.StreamDispatch,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        streams_app=stream_host.build(async_spec, app.config["VALIDATE_RESPONSES"]),
        paths=stream_paths,
    )
    errors.register_error_handlers(cx)
    request_log.register(app)
    request_log.install_access_log_filter()
    deprecation.register(app, spec)  # Deprecation/Sunset headers
    register_blueprints(app)
    register_commands(app)
    return cx


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in _csrf_for_sessions
    csrf.init_app(app)
    security = account_security.init_app(app)  # after CSRFProtect, as Flask-Security-Too requires
    anonymous_without_credentials(app)  # ahead of Flask-Principal's identity loading
    Htmx(app)  # request.htmx for the portal's views

    redis_url = redis_conn.resolve_url(app.config["REDIS_URL"])
    app.config["REDIS_URL"] = redis_url
    r = redis_conn.client(redis_url)
    app.extensions["levqor.redis"] = r
    # The API call's path on its own Redis when LIMITS_REDIS_URL is set (REDIS_URL's otherwise).
    limits_url = app.config.get("LIMITS_REDIS_URL") or redis_url
    app.config["LIMITS_REDIS_URL"] = limits_url
    limits_cluster = limits_url != redis_url and redis_conn.is_cluster(limits_url)
    limits_r = r if limits_url == redis_url else redis_conn.client(limits_url, cluster=limits_cluster)
    app.extensions["levqor.limits_redis"] = limits_r
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_conn.limits_storage_uri(limits_url, limits_cluster))
    app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", redis_conn.limits_storage_options(limits_url, limits_cluster))
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "lvq-fl")
    init_limiter(app)
    app.extensions["levqor.request_log"] = Recorder(
        app.config["SQLALCHEMY_DATABASE_URI"],
        app.config["REQUEST_LOG_FLUSH_SECONDS"],
        connect_args=app.config["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args"),
        redis_client=r,
        feed_redis=limits_r,
    )
    app.extensions[streams.EXTENSION] = streams.Streams.from_app(app)
    # GitHub's secret-scanning signing keys, fetched on the first report (levqor_core.keys.github_signature).
    app.extensions["levqor.github_keys"] = github_signature.GitHubKeys(
        app.config["GITHUB_SECRET_SCANNING_KEYS_URL"],
        refresh_floor=app.config["GITHUB_SECRET_SCANNING_REFRESH_SECONDS"],
    )
    app.extensions["levqor.gate"] = gate.Gate(
        app,
        limits_r,
        app.config["USAGE_FLUSH_SECONDS"],
        async_client_factory=lambda: redis_conn.script_client(limits_url, cluster=limits_cluster),
        script_redis=redis_conn.client(limits_url, cluster=limits_cluster, resend=False),
    )

    @security.login_manager.unauthorized_handler
    def unauthorized():
        if is_api_path(request.path):
            raise problems.NotAuthenticated("Sign in to the portal, or send your key in the x-api-key header.")
        return redirect(url_for("security.login", next=request.full_path))

    security.unauthn_handler(lambda mechanisms=None, headers=None: unauthorized())

    @app.before_request
    def _csrf_for_sessions():
        # Cookie-authenticated state changes need the CSRF token. API-key calls carry no cookie
        # authority, nor do the operations whose spec'd security accepts no portal session
        # (Stripe's and GitHub's calls, authenticated by their signatures).
        state_change = request.method in ("POST", "PUT", "PATCH", "DELETE")
        if state_change and not _authenticated_by_key() and _session_may_authorize():
            csrf.protect()

    def _session_may_authorize() -> bool:
        """False for an API operation whose `security` in the spec does not accept the portal's
        session cookie; True for it and for every portal route."""
        try:
            security = connexion_operation.security
        except (RuntimeError, LookupError):  # not an API operation: no Connexion context
            return True
        return any(SESSION_SCHEME in requirement for requirement in security or ())

    def _authenticated_by_key() -> bool:
        """True when Connexion's security admitted this request by its x-api-key (not a cookie)."""
        if not request.headers.get("x-api-key"):
            return False
        try:
            return "account_id" in (connexion_context.get("token_info") or {})
        except RuntimeError:  # not an API operation: no Connexion context
            return False


def register_blueprints(app: Flask) -> None:
    # Named, not imported, as the spec names the handlers by operationId: the core never imports
    # the portal, so the portal can import any of the core.
    for name in PORTAL_BLUEPRINTS:
        app.register_blueprint(import_string(name))


def register_commands(app: Flask) -> None:
    from levqor_core import cli

    cli.register(app)
