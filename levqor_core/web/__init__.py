"""HTTP plumbing for the API and the portal: ASGI middleware, validation, Flask-Limiter, deprecation headers."""
