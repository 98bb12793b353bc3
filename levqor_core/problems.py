"""Typed API errors, rendered as RFC 9457 problem+json with a stable `type` URI.

Plain exceptions, so the domain core raises them without loading a web framework; the error
handlers in `levqor_core.errors` render them on the API (Connexion) and the portal (Flask)."""

import json

from flask import jsonify

TYPE_BASE = "https://levqor.dev/problems/"


def document(status: int, title: str, detail: str | None, type_: str, ext: dict | None = None) -> dict:
    """The one shape of a problem+json body (RFC 9457), wherever it is rendered: the API's error
    handlers, Flask's, and the request guard's refusals before routing."""
    body = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return body | (ext or {})


class Problem(Exception):
    status = 500
    slug = "internal-error"
    title = "Internal server error"

    def __init__(self, detail: str | None = None, *, headers: dict | None = None, **ext):
        super().__init__(detail or self.title)
        self.detail = detail
        self.type = TYPE_BASE + self.slug
        self.headers = headers
        self.ext = ext or None

    def document(self) -> dict:
        return document(self.status, self.title, self.detail, self.type, self.ext)

    def json_bytes(self) -> bytes:
        """The problem+json body, for a layer that writes bytes (the request guard)."""
        return json.dumps(self.document(), separators=(",", ":")).encode()

    def flask_response(self):
        """The problem as a Flask response, for errors raised where Connexion does not render them."""
        response = jsonify(self.document())
        response.status_code = self.status
        response.mimetype = "application/problem+json"
        response.headers.update(self.headers or {})
        return response

    def with_headers(self, headers: dict) -> "Problem":
        self.headers = {**(self.headers or {}), **headers}
        return self


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class NestingTooDeep(BadRequest):
    slug, title = "nesting-too-deep", "JSON nested too deeply"


class InvalidApiKey(Problem):
    status, slug, title = 401, "invalid-api-key", "Invalid API key"


class NotAuthenticated(Problem):
    status, slug, title = 401, "not-authenticated", "Not authenticated"


class CsrfFailed(Problem):
    status, slug, title = 403, "csrf-failed", "CSRF token missing or invalid"


class EmailNotVerified(Problem):
    status, slug, title = 403, "email-not-verified", "Email address not confirmed"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class IdempotencyConflict(Problem):
    status, slug, title = 409, "idempotency-key-reused", "Idempotency key reused with a different request"


class RequestTimeout(Problem):
    status, slug, title = 408, "request-timeout", "Request body too slow"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class TooManyRequests(Problem):
    status, slug, title = 429, "rate-limited", "Too many requests"


class BurstLimitExceeded(TooManyRequests):
    slug, title = "burst-limit-exceeded", "Burst limit exceeded"


class MonthlyQuotaExceeded(TooManyRequests):
    slug, title = "monthly-quota-exceeded", "Monthly quota exceeded"


class SandboxDailyCapExceeded(TooManyRequests):
    slug, title = "sandbox-daily-cap-exceeded", "Sandbox daily cap exceeded"


class AuthenticationThrottled(TooManyRequests):
    slug, title = "too-many-failed-authentications", "Too many failed authentications"


class KeyCreationLimited(TooManyRequests):
    slug, title = "key-creation-limited", "API key creation limited"


class ServiceUnavailable(Problem):
    status, slug, title = 503, "service-unavailable", "Service unavailable"
