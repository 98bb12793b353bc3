"""HTTP plumbing shared by the API and the portal: ASGI middleware, request validation, Flask-Limiter, deprecation headers."""
