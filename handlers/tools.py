"""/postman.json: the Postman collection, built at setup (openapi/postman.py), read at start-up."""

from flask import Response, current_app

from levqor_core import problems


def get_postman_collection() -> Response:
    """The collection with `baseUrl` naming this server; 503 where it was not built."""
    body = current_app.extensions.get("levqor.postman")
    if body is None:
        raise problems.ServiceUnavailable("The Postman collection was not built on this server; run `make setup`.")
    return Response(body, status=200, mimetype="application/json")
