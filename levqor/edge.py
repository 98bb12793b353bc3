"""ASGI middleware at the very edge of the API: body size limit and rate-limit headers."""

import json
import re

from . import problems

# Stripe's events (an invoice with many lines) can outgrow the API's body limit; Stripe would retry
# a refused delivery for days, so its endpoint takes up to 1 MiB.
WEBHOOK_MAX_BODY_BYTES = 1024 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _problem_body(problem: problems.Problem) -> bytes:
    return json.dumps(
        {"type": problem.type, "title": problem.title, "status": problem.status, "detail": problem.detail}
    ).encode()


class ApiEdge:
    """Refuses oversize bodies with 413 before anything reads them, and adds the headers the
    gate computed (X-RateLimit-*, RateLimit-*) to every response, errors included."""

    def __init__(self, app, flask_app, max_body_bytes: int):
        self.app = app
        self.flask_app = flask_app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _CONTROL.search(scope.get("path", "")):
            # Starlette's router refuses these where Flask's would not, so refuse them up front.
            return await self._send_problem(send, problems.BadRequest("The URL path contains control characters."))
        limit = WEBHOOK_MAX_BODY_BYTES if scope.get("path") == "/api/billing/webhook" else self.max_body_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._send_problem(
                send, problems.PayloadTooLarge(f"Request bodies are limited to {limit} bytes.")
            )
        # The security functions find this app's gate here (several apps may share a process).
        scope["levqor.gate"] = self.flask_app.extensions["levqor.gate"]
        extra = scope.setdefault("levqor.response_headers", {})
        seen = 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:  # chunked bodies declare no length
                    raise problems.PayloadTooLarge(f"Request bodies are limited to {limit} bytes.")
            return message

        async def send_with_headers(message):
            if message["type"] == "http.response.start" and extra:
                present = {k.lower() for k, _ in message.get("headers", [])}
                added = [
                    (k.lower().encode(), v.encode()) for k, v in extra.items() if k.lower().encode() not in present
                ]
                message = {**message, "headers": list(message.get("headers", [])) + added}
            await send(message)

        await self.app(scope, receive_limited, send_with_headers)

    async def _send_problem(self, send, problem: problems.Problem):
        body = _problem_body(problem)
        await send(
            {
                "type": "http.response.start",
                "status": problem.status,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
