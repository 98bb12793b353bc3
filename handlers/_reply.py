"""Responses: operations also declare problem+json for errors, so success names its type."""

JSON = {"Content-Type": "application/json"}

# What a handler returns to Connexion: (body, status, headers).
Reply = tuple[object, int, dict]


def ok(body: object, status: int = 200, headers: dict | None = None) -> Reply:
    """A JSON success response."""
    return body, status, JSON | (headers or {})
