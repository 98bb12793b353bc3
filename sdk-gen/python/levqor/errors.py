"""Typed errors for the Levqor SDK (hand-written; copied into the generated package by sdk-gen).

Every API error is an `APIError` carrying the RFC 9457 problem document the server sent. Each
class also subclasses the matching generated exception (`UnauthorizedException`, ...), so code
written against the plain generated client keeps catching what it caught before.
"""

from __future__ import annotations

import json
from typing import Any

from .exceptions import (
    ApiException,
    BadRequestException,
    ConflictException,
    ForbiddenException,
    NotFoundException,
    ServiceException,
    UnauthorizedException,
    UnprocessableEntityException,
)
from .models.problem import Problem


class LevqorError(Exception):
    """The base of every error the SDK raises on purpose."""


class APIConnectionError(LevqorError):
    """The API could not be reached (after the configured retries)."""


class APIError(LevqorError, ApiException):
    """The API answered with an error status; `problem` is its problem+json body."""

    def __init__(self, source: ApiException) -> None:
        ApiException.__init__(self, status=source.status, reason=source.reason, body=source.body, data=source.data)
        self.headers = source.headers
        self.problem: Problem | None = source.data if isinstance(source.data, Problem) else _parse_problem(source.body)

    @property
    def type(self) -> str | None:
        return self.problem.type if self.problem else None

    @property
    def title(self) -> str | None:
        return self.problem.title if self.problem else self.reason

    @property
    def detail(self) -> str | None:
        return self.problem.detail if self.problem else None

    def __str__(self) -> str:
        text = f"{self.status} {self.title}"
        if self.detail:
            text += f": {self.detail}"
        if self.type:
            text += f" ({self.type})"
        return text


class BadRequestError(APIError, BadRequestException):
    """400: the request does not match the API's schema."""


class AuthenticationError(APIError, UnauthorizedException):
    """401: the API key is missing, malformed, unknown, expired or revoked."""


class PermissionDeniedError(APIError, ForbiddenException):
    """403: the caller may not do this."""


class NotFoundError(APIError, NotFoundException):
    """404: no such resource in this account."""


class ConflictError(APIError, ConflictException):
    """409: e.g. an Idempotency-Key reused with another body, or cancelling a finished job."""


class PayloadTooLargeError(APIError):
    """413: the request body is too large."""


class UnprocessableEntityError(APIError, UnprocessableEntityException):
    """422: the request was understood but cannot be processed."""


class RateLimitError(APIError):
    """429 that outlasted the retries: a burst limit, the monthly quota or the sandbox's daily cap."""

    @property
    def retry_after(self) -> int | None:
        """Seconds the server asked to wait, from the Retry-After header."""
        value = (self.headers or {}).get("Retry-After")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


class InternalServerError(APIError, ServiceException):
    """5xx that outlasted the retries."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def from_api_exception(error: ApiException) -> APIError:
    """The typed error for a generated ApiException."""
    status = error.status or 0
    cls = _BY_STATUS.get(status, InternalServerError if 500 <= status <= 599 else APIError)
    return cls(error)


def _parse_problem(body: Any) -> Problem | None:
    # A proxy in front of the API may answer with HTML or an empty body: keep the raw body then.
    try:
        return Problem.from_dict(json.loads(body))
    except (TypeError, ValueError):
        return None
