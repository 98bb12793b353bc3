"""The app's one ASGI middleware, outermost of ours: body size and nesting limits, rate-limit and
security headers on every response (the API's problem responses never pass through Flask), the
`Request-Id` on every response (and as `request_id` in every problem body), the request metrics
and the request log. One layer with one send() wrapper: each ASGI layer a request crosses costs it
a coroutine and a wrapped send per message."""

import asyncio
import json
import re
import time

from levqor_core import problems
from levqor_core.requestlog import recorder as request_log
from levqor_core.web import request_metrics
from levqor_core.web.request_log import CURRENT, HEADER, SCOPE_KEY, new_request_id

# An operation's own body limit in the spec (Stripe's webhook takes up to 1 MiB, GitHub's reports 64 KiB).
BODY_LIMIT_EXTENSION = "x-max-body-bytes"
_METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# JSON bodies may nest arrays and objects this deep. Python's parser, the schema validators and the
# encoder all recurse: 3,000 levels was a RecursionError (a 500), after the call had been counted.
MAX_JSON_DEPTH = 32
_STRUCTURAL = re.compile(rb'[\[\]{}"\\]')
# Bodies these carry are never parsed as JSON (the portal's forms), so their brackets are just text.
_NOT_JSON = (b"application/x-www-form-urlencoded", b"multipart/form-data")
# A body must have arrived in full this long after the request did: a client trickling it in (or
# stalling) would otherwise hold its connection and buffer open for as long as it likes.
BODY_TIMEOUT_SECONDS = 10.0
NOSNIFF = (b"x-content-type-options", b"nosniff")
# Sent on responses to HTTPS requests (the scheme the trusted proxy reported): browsers then use
# HTTPS only for a year. Over plain HTTP browsers ignore it, so local runs are unaffected.
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
PROBLEM_JSON = b"application/problem+json"
# The request body kept for the log of a failed call: enough to see what was sent.
LOGGED_BODY_BYTES = 4 * request_log.MAX_BODY_CHARS


def json_depth_exceeds(body: bytes | bytearray, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True if the bytes nest `[`/`{` deeper than max_depth outside strings, without parsing them."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False  # cannot nest deeper than it has brackets: the usual case, two C-speed counts
    depth, in_string, skip = 0, False, -1
    for match in _STRUCTURAL.finditer(body):
        i = match.start()
        if i == skip:  # the character after a backslash in a string
            continue
        c = body[i]
        if in_string:
            if c == 0x5C:  # backslash
                skip = i + 1
            elif c == 0x22:
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return True
        elif c in (0x5D, 0x7D):
            depth -= 1
    return False


def body_limits(spec: dict) -> dict[str, int]:
    """The request paths (under the spec's own server, `/api`) whose operation sets its own body
    limit (`x-max-body-bytes`). The guard runs before routing, so it knows a request only by its
    path: such a path may hold no parameter, and its operations must agree on one limit."""
    base = next((s["url"] for s in spec.get("servers") or () if s.get("url", "").startswith("/")), "")
    limits: dict[str, int] = {}
    for path, item in (spec.get("paths") or {}).items():
        for method in _METHODS:
            limit = (item.get(method) or {}).get(BODY_LIMIT_EXTENSION)
            if limit is None:
                continue
            if "{" in path or not isinstance(limit, int) or limit <= 0:
                raise ValueError(
                    f"{method.upper()} {path}: {BODY_LIMIT_EXTENSION} needs a fixed path and a positive size"
                )
            if limits.setdefault(base.rstrip("/") + path, limit) != limit:
                raise ValueError(f"{path}: its operations disagree on {BODY_LIMIT_EXTENSION}")
    return limits


def _too_large(limit: int) -> problems.Problem:
    return problems.PayloadTooLarge(f"Request bodies are limited to {limit} bytes.")


def _replay(body: bytes, receive):
    """A receive() that hands over the body already read, then waits on the client as before."""
    pending = True

    async def replayed():
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def with_request_id(body: bytes, request_id: str) -> bytes:
    """A problem+json object with `request_id` added (spliced in: no parse, no re-encoding)."""
    stripped = body.rstrip()
    if not stripped.startswith(b"{") or not stripped.endswith(b"}"):
        return body
    inner = stripped[:-1].rstrip()
    separator = b"" if inner == b"{" else b","
    return inner + separator + b'"request_id":"' + request_id.encode() + b'"}'


def _problem_body(problem: problems.Problem) -> bytes:
    return json.dumps(
        {"type": problem.type, "title": problem.title, "status": problem.status, "detail": problem.detail}
    ).encode()


class RequestGuard:
    """Reads a request's body in full before anything else sees it (at most the body limit):
    refuses it with 413 if it is too large and with 400 if its JSON nests deeper than
    MAX_JSON_DEPTH, before the API's security runs, so a refused body spends no quota. Adds the
    headers the gate computed (X-RateLimit-*, RateLimit-*) and a Request-Id to every response,
    errors included, records every request in the metrics and each account's API calls in the
    request log."""

    def __init__(
        self,
        app,
        flask_app,
        max_body_bytes: int,
        redis_client=None,
        stats_flush_seconds: float = 10.0,
        body_limits: dict[str, int] | None = None,
    ):
        self.app = app
        self.flask_app = flask_app
        self.max_body_bytes = max_body_bytes
        self.body_limits = body_limits or {}
        self.redis = redis_client
        self.stats_flush_seconds = stats_flush_seconds
        self.request_log = flask_app.extensions.get("levqor.request_log")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.redis is not None:
            request_metrics.start_flusher(self.redis, self.stats_flush_seconds)
        # Connexion's router records the operation in a shallow copy of the scope: sharing the
        # extensions dict lets us read it afterwards.
        scope.setdefault("extensions", {})
        # Filled by the security function while the request runs, so read when the response starts.
        rate_headers = scope.setdefault("levqor.response_headers", {})
        request_id = new_request_id()
        # Who called (the security function or the portal-session hook fills it) and the body read.
        seen = scope[SCOPE_KEY] = {}
        security_headers = [NOSNIFF, HSTS] if scope.get("scheme") == "https" else [NOSNIFF]
        at = time.time()
        started = time.perf_counter()
        status = 500
        # A problem+json response is held back until its body is whole, to add request_id to it.
        held: dict | None = None
        problem_chunks: list[bytes] = []
        problem_body: bytes | None = None

        async def sending(message):
            nonlocal status, held, problem_body
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in security_headers if k not in present]
                for name, value in rate_headers.items():
                    key = name.lower().encode()
                    if key not in present:
                        headers.append((key, value.encode()))
                headers.append((HEADER, request_id.encode()))
                message = {**message, "headers": headers}
                if any(k.lower() == b"content-type" and v.startswith(PROBLEM_JSON) for k, v in headers):
                    held = message
                    return
                CURRENT.set(request_id)  # the access log line is written inside this send()
            elif held is not None and message["type"] == "http.response.body":
                problem_chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                start, held = held, None
                problem_body = b"".join(problem_chunks)
                if problem_body:  # a HEAD answer has none: its Content-Length stays the GET's
                    problem_body = with_request_id(problem_body, request_id)
                    start["headers"] = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"] + [
                        (b"content-length", str(len(problem_body)).encode())
                    ]
                CURRENT.set(request_id)
                await send(start)
                message = {"type": "http.response.body", "body": problem_body}
            await send(message)

        try:
            await self._guarded(scope, receive, sending, seen)
        finally:
            seconds = time.perf_counter() - started
            request_metrics.record(scope, status, seconds, (problem_body or b"") if status == 429 else None)
            account_id = seen.get("account_id")
            if account_id is not None and self.request_log is not None:
                self.request_log.start()
                failed = status >= 400
                self.request_log.add(
                    request_log.entry(
                        at,
                        account_id,
                        seen.get("key_id"),
                        request_id,
                        scope.get("method", ""),
                        scope.get("path", ""),
                        scope.get("query_string", b""),
                        status,
                        seconds,
                        seen.get("body")[:LOGGED_BODY_BYTES] if failed and seen.get("body") else None,
                        problem_body if failed else None,
                    )
                )

    async def _guarded(self, scope, receive, send, seen: dict):
        if _CONTROL.search(scope.get("path", "")):
            # Starlette's router refuses these where Flask's would not, so refuse them up front.
            return await self._send_problem(send, problems.BadRequest("The URL path contains control characters."))
        limit = self.body_limits.get(scope.get("path"), self.max_body_bytes)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._send_problem(send, _too_large(limit))
        if (declared is not None and declared != b"0") or b"transfer-encoding" in headers:
            body = bytearray()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + BODY_TIMEOUT_SECONDS
            while True:
                try:
                    message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
                except TimeoutError:
                    return await self._send_problem(
                        send,
                        problems.RequestTimeout(f"The request body must arrive within {BODY_TIMEOUT_SECONDS:g} s."),
                        close=True,
                    )
                if message["type"] == "http.disconnect":
                    return  # the client left mid-body: nobody to answer
                body.extend(message.get("body", b""))
                if len(body) > limit:  # chunked bodies declare no length
                    return await self._send_problem(send, _too_large(limit), close=True)
                if not message.get("more_body"):
                    break
            content_type = headers.get(b"content-type", b"").lower()
            if not content_type.startswith(_NOT_JSON) and json_depth_exceeds(body):
                return await self._send_problem(
                    send,
                    problems.NestingTooDeep(f"JSON bodies may nest arrays and objects at most {MAX_JSON_DEPTH} deep."),
                )
            body = seen["body"] = bytes(body)  # kept for the request log of a failed call
            receive = _replay(body, receive)
            if declared is None:
                # A chunked body, now read: Connexion takes a request without Content-Length for
                # one without a body ("RequestBody is required"), so say how long it was.
                scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"transfer-encoding"] + [
                    (b"content-length", str(len(body)).encode())
                ]
        # The security functions find this app's gate and extensions here (several apps may share a process).
        scope["levqor.gate"] = self.flask_app.extensions["levqor.gate"]
        scope["levqor.extensions"] = self.flask_app.extensions
        await self.app(scope, receive, send)

    async def _send_problem(self, send, problem: problems.Problem, close: bool = False):
        body = _problem_body(problem)
        headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
        if close:  # the rest of the body may still be on its way: this connection is done
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": problem.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
