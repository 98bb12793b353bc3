"""Levqor developer portal: the domain core and the app factory."""

import json
import logging
import time
from http.cookies import CookieError
from pathlib import Path

import connexion
import redis
import yaml
from connexion.context import context as connexion_context
from connexion.exceptions import ProblemException
from connexion.jsonifier import Jsonifier
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.problem import problem
from flask import Flask, redirect, render_template, request, url_for
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import config, deprecation, gate, problems, redis_conn, tiers, validation
from .edge import ApiEdge
from .extensions import csrf, db, limiter, login_manager, migrate
from .metrics import MetricsMiddleware
from .models import Account

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi" / "openapi.yaml"
log = logging.getLogger(__name__)

# Problem types for errors Connexion and Starlette raise themselves (validation, routing).
_TYPES_BY_STATUS = {
    400: "bad-request",
    401: "invalid-api-key",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    500: "internal-error",
}


_POLICY_NAMES = {"second": "burst", "minute": "minute", "hour": "hourly", "day": "daily"}


def _limiter_headers(response):
    """A Flask-Limiter limit's response gets the IETF RateLimit pair next to its X-RateLimit-*,
    like the gate's; and Retry-After, which Flask-Limiter adds to every response, only on a refusal."""
    current = limiter.current_limit
    if current is None:
        return response
    if response.status_code < 400:
        response.headers.pop("Retry-After", None)
    if "RateLimit" not in response.headers:
        name = _POLICY_NAMES.get(current.limit.GRANULARITY.name, current.limit.GRANULARITY.name)
        seconds_left = max(0, int(current.reset_at - time.time()))
        response.headers["RateLimit-Policy"] = gate.policy(name, current.limit.amount, current.limit.get_expiry())
        response.headers["RateLimit"] = gate.ietf_remaining(name, current.remaining, seconds_left)
    return response


def create_app(test_config: dict | None = None) -> connexion.FlaskApp:
    """Build the Connexion app (ASGI) around the Flask app; settings from the environment."""
    settings = config.from_env()
    settings.update(test_config or {})
    logging.basicConfig(level=settings["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cx = connexion.FlaskApp(__name__, specification_dir=str(SPEC.parent))
    app: Flask = cx.app
    app.config.update(settings)
    app.config["API_VERSION"] = yaml.safe_load(SPEC.read_text())["info"]["version"]
    app.template_folder = str(ROOT / "portal" / "templates")

    register_extensions(app)
    cx.add_api(
        SPEC.name,
        strict_validation=True,
        validate_responses=True,
        pythonic_params=False,
        # Compact output keeps json on its C encoder (Connexion's default indent=2 does not).
        jsonifier=Jsonifier(json, separators=(",", ":")),
        validator_map=validation.validator_map(),
        # /docs/api is the one reference (CSP, frame denial, "Try it out" on the sandbox); Connexion's
        # bundled Swagger UI at /api/ui/ had none of that and called production.
        swagger_ui_options=SwaggerUIOptions(serve_spec=True, swagger_ui=False),
    )
    # Outermost of ours: counts and times every request.
    cx.add_middleware(
        MetricsMiddleware,
        position=MiddlewarePosition.BEFORE_EXCEPTION,
        redis_client=app.extensions["levqor.redis"],
        flush_seconds=app.config["STATS_FLUSH_SECONDS"],
    )
    cx.add_middleware(
        ApiEdge, position=MiddlewarePosition.BEFORE_EXCEPTION, flask_app=app, max_body_bytes=settings["MAX_BODY_BYTES"]
    )
    register_error_handlers(cx)
    deprecation.register(app, yaml.safe_load(SPEC.read_text()))  # Deprecation/Sunset headers
    register_blueprints(app)
    register_commands(app)
    return cx


def register_extensions(app: Flask) -> None:
    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    login_manager.init_app(app)
    login_manager.login_view = "portal.login"
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # checked in _csrf_for_sessions
    csrf.init_app(app)

    redis_url = redis_conn.resolve_url(app.config["REDIS_URL"])
    app.config["REDIS_URL"] = redis_url
    r = redis_conn.client(redis_url)
    app.extensions["levqor.redis"] = r
    app.config.setdefault("RATELIMIT_STORAGE_URI", redis_conn.limits_storage_uri(redis_url))
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "lvq-fl")
    # Registered before Flask-Limiter's own hook, so it runs after it (Flask runs them in reverse).
    app.after_request(_limiter_headers)
    limiter.init_app(app)
    app.extensions["levqor.gate"] = gate.Gate(
        app, r, app.config["USAGE_FLUSH_SECONDS"], async_client_factory=lambda: redis_conn.async_client(redis_url)
    )

    @login_manager.user_loader
    def load_account(account_id):
        return db.session.get(Account, int(account_id))

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.path.startswith("/api/"):
            raise problems.NotAuthenticated("Sign in to the portal, or send your key in the x-api-key header.")
        return redirect(url_for("portal.login", next=request.full_path))

    @app.before_request
    def _csrf_for_sessions():
        # Cookie-authenticated state changes need the CSRF token; API-key calls carry no cookie
        # authority, and Stripe signs its webhooks instead.
        state_change = request.method in ("POST", "PUT", "PATCH", "DELETE")
        if state_change and not _authenticated_by_key() and request.path != "/api/billing/webhook":
            csrf.protect()

    def _authenticated_by_key() -> bool:
        """True when Connexion's security admitted this request by its x-api-key (not a cookie)."""
        if not request.headers.get("x-api-key"):
            return False
        try:
            return "account_id" in (connexion_context.get("token_info") or {})
        except RuntimeError:  # not an API operation: no Connexion context
            return False


def register_error_handlers(cx: connexion.FlaskApp) -> None:
    app = cx.app

    def typed_problem(_request, exc: ProblemException):
        type_ = exc.type
        if not type_ or type_ == "about:blank":
            type_ = problems.TYPE_BASE + _TYPES_BY_STATUS.get(exc.status, "error")
        return problem(exc.status, exc.title, exc.detail, type=type_, headers=exc.headers, ext=exc.ext)

    def http_problem(_request, exc: StarletteHTTPException):
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else None
        title = {404: "Not found", 405: "Method not allowed"}.get(status, "Error")
        return problem(
            status, title, detail, type=problems.TYPE_BASE + _TYPES_BY_STATUS.get(status, "error"), headers=exc.headers
        )

    def internal_problem(_request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return problem(
            500,
            "Internal server error",
            "Something went wrong on our side; it has been logged.",
            type=problems.TYPE_BASE + "internal-error",
        )

    def redis_unavailable(_request, exc: Exception):
        log.warning("redis unavailable: %s", exc)
        return problem(
            503,
            "Service unavailable",
            "A backing service is briefly unavailable; retry shortly.",
            type=problems.TYPE_BASE + "service-unavailable",
            headers={"Retry-After": "5"},
        )

    def undecodable_body(_request, exc: Exception):
        return problem(
            400, "Bad request", "The request body is not valid UTF-8 JSON.", type=problems.TYPE_BASE + "bad-request"
        )

    def unreadable_cookie(_request, exc: Exception):
        # Connexion's cookie security reads the Cookie header with http.cookies, which raises on
        # a malformed one (found by the fuzz): no session can be read from it.
        return problem(
            401,
            "Not authenticated",
            "The Cookie header could not be read; sign in again.",
            type=problems.TYPE_BASE + "not-authenticated",
        )

    cx.add_error_handler(UnicodeDecodeError, undecodable_body)
    cx.add_error_handler(CookieError, unreadable_cookie)
    cx.add_error_handler(redis.RedisError, redis_unavailable)
    cx.add_error_handler(ProblemException, typed_problem)
    cx.add_error_handler(StarletteHTTPException, http_problem)
    cx.add_error_handler(Exception, internal_problem)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(exc: RateLimitExceeded):
        reset_at = limiter.current_limit.reset_at if limiter.current_limit else time.time() + 60
        retry_after = max(1, int(reset_at - time.time() + 0.999))
        granularity = limiter.current_limit.limit.GRANULARITY.name if limiter.current_limit else ""
        if request.path == "/api/key/new":
            per_day = tiers.KEY_CREATIONS_PER_DAY
            kind, detail = problems.KeyCreationLimited, f"You can create {per_day} API key(s) per day; try again later."
        elif granularity == "second":
            amount = limiter.current_limit.limit.amount
            kind, detail = problems.BurstLimitExceeded, f"More than {amount} calls per second."
        else:
            kind, detail = problems.TooManyRequests, "Too many attempts; try again later."
        if request.path.startswith("/api/"):
            response = kind(detail).flask_response()
        elif exc.response is not None:
            response = exc.response  # the view's own page for it (the limit's on_breach)
        else:
            page = render_template("errors/message.html", title="Slow down", message=detail)
            response = app.make_response((page, 429))
        response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        if request.path.startswith("/api/"):
            return problems.CsrfFailed(exc.description).flask_response()
        return render_template(
            "errors/message.html",
            title="This form has expired",
            message="Your session's security token was missing or out of date. Go back, reload the page and try again.",
        ), 400


def register_blueprints(app: Flask) -> None:
    from portal import views

    app.register_blueprint(views.bp)
    from portal import billing_views

    app.register_blueprint(billing_views.bp)
    from portal import ops_views

    app.register_blueprint(ops_views.bp)


def register_commands(app: Flask) -> None:
    from . import cli

    cli.register(app)
