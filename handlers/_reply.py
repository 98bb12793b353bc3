"""Responses: operations also declare problem+json for errors, so success names its type."""

JSON = {"Content-Type": "application/json"}


def ok(body, status: int = 200, headers: dict | None = None):
    return body, status, JSON | (headers or {})
