"""Error handlers: every API error is RFC 9457 problem+json, every portal error a readable page."""

import json
import logging
import time
from http.cookies import CookieError
from urllib.parse import urlsplit, urlunsplit

import connexion
import redis
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionResponse
from flask import redirect, render_template, request
from flask_limiter.errors import RateLimitExceeded
from flask_wtf.csrf import CSRFError
from starlette.exceptions import HTTPException as StarletteHTTPException
from werkzeug.routing import RequestRedirect

from levqor_core import problems, tiers
from levqor_core.web.api_paths import is_api_path
from levqor_core.web.limiter import limiter

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


PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str | None, type: str, headers: dict | None = None, ext=None):  # noqa: A002 (Connexion's name)
    """A problem+json answer for Connexion, in problems.document's one shape."""
    body = json.dumps(problems.document(status, title, detail, type, ext))
    return ConnexionResponse(status, PROBLEM_JSON, PROBLEM_JSON, body=body, headers=headers)


def typed_problem(_request, exc: ProblemException | problems.Problem):
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


def register_api_error_handlers(cx: connexion.FlaskApp | connexion.AsyncApp) -> None:
    """The API's problem+json answers, on the Flask app and on the streams' async app alike."""
    cx.add_error_handler(UnicodeDecodeError, undecodable_body)
    cx.add_error_handler(CookieError, unreadable_cookie)
    cx.add_error_handler(redis.RedisError, redis_unavailable)
    cx.add_error_handler(redis.exceptions.RedisClusterException, redis_unavailable)  # LIMITS_REDIS_URL on a cluster
    cx.add_error_handler(ProblemException, typed_problem)  # raised by Connexion itself (validation)
    cx.add_error_handler(problems.Problem, typed_problem)
    cx.add_error_handler(StarletteHTTPException, http_problem)
    cx.add_error_handler(Exception, internal_problem)


def register_error_handlers(cx: connexion.FlaskApp) -> None:
    app = cx.app
    register_api_error_handlers(cx)

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
        if is_api_path(request.path):
            response = kind(detail).flask_response()
        elif exc.response is not None:
            response = exc.response  # the view's own page for it (the limit's on_breach)
        else:
            page = render_template("errors/message.html", title="Slow down", message=detail)
            response = app.make_response((page, 429))
        response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(RequestRedirect)
    def routing_redirect(exc: RequestRedirect):
        # Werkzeug's own redirects (`//` merged, a missing trailing slash). Connexion turns every
        # Flask HTTP error into a body with the status and no headers, so `GET /assets//portal.css`
        # answered a 308 without a Location. Relative, as the host Werkzeug names is the one the
        # client wrote, and never `//host` or `/\host` (browsers read both as another site).
        parts = urlsplit(exc.new_url)
        return redirect(urlunsplit(("", "", "/" + parts.path.lstrip("/\\"), parts.query, "")), exc.code)

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        if is_api_path(request.path):
            return problems.CsrfFailed(exc.description).flask_response()
        return render_template(
            "errors/message.html",
            title="This form has expired",
            message="Your session's security token was missing or out of date. Go back, reload the page and try again.",
        ), 400
