"""The app's one ASGI middleware, outermost of ours: body size and nesting limits, rate-limit and
security headers on every response (the API's problem responses never pass through Flask), the
`Request-Id` on every response (and as `request_id` in every problem body), the request metrics
and the request log. One layer with one send() wrapper: each ASGI layer a request crosses costs it
a coroutine and a wrapped send per message."""

import asyncio
import re
import time

from levqor_core import problems
from levqor_core.requestlog import recorder as request_log
from levqor_core.web import request_metrics, request_state
from levqor_core.web.api_paths import is_api_path
from levqor_core.web.request_log import CURRENT, HEADER, new_request_id

# An operation's own body limit in the spec (Stripe's webhook takes up to 1 MiB, GitHub's reports 64 KiB).
BODY_LIMIT_EXTENSION = "x-levqor-max-body-bytes"
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
# What the request log keeps of a call's bodies: enough to see what was sent and answered (the row
# keeps MAX_BODY_CHARS characters of the request, twice that of the answer; UTF-8 is 4 bytes at most).
LOGGED_BODY_BYTES = 4 * request_log.MAX_BODY_CHARS
LOGGED_RESPONSE_BYTES = 2 * LOGGED_BODY_BYTES


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
    limit (`x-levqor-max-body-bytes`). The guard runs before routing, so it knows a request only by its
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


class _Response:
    """The guard's send(): every response gets the security headers, the gate's rate-limit headers
    and the Request-Id; a problem+json body is held until whole to splice `request_id` into it."""

    def __init__(self, send, state: request_state.RequestState, security_headers: list, api_call: bool):
        self._send = send
        self._state = state
        self._security_headers = security_headers
        self._held: dict | None = None
        self._chunks: list[bytes] = []
        self.status = 500
        self.problem_body: bytes | None = None
        # The first bytes of an API call's answer, for its request log; none of one that carries a
        # secret (Cache-Control: no-store: a new key, a new webhook endpoint's signing secret).
        self._keep = api_call
        self._kept: list[bytes] = []
        self._kept_bytes = 0

    @property
    def body(self) -> bytes | None:
        """What the request log keeps of the answer: the problem, or the first LOGGED_RESPONSE_BYTES."""
        if self.problem_body is not None:
            return self.problem_body
        return b"".join(self._kept)[:LOGGED_RESPONSE_BYTES] if self._keep and self._kept else None

    async def send(self, message) -> None:
        if message["type"] == "http.response.start":
            message = self._start(message)
            if message is None:  # a problem: held back until its body is whole
                return
            CURRENT.set(self._state.request_id)  # the access log line is written inside this send()
        elif self._held is not None and message["type"] == "http.response.body":
            self._chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            start, message = self._problem_with_request_id()
            CURRENT.set(self._state.request_id)
            await self._send(start)
        elif self._keep and message["type"] == "http.response.body" and self._kept_bytes < LOGGED_RESPONSE_BYTES:
            chunk = message.get("body", b"")[: LOGGED_RESPONSE_BYTES - self._kept_bytes]
            self._kept.append(chunk)
            self._kept_bytes += len(chunk)
        await self._send(message)

    def _start(self, message) -> dict | None:
        self.status = message["status"]
        headers = list(message.get("headers", ()))
        present = {k.lower() for k, _ in headers}
        headers += [(k, v) for k, v in self._security_headers if k not in present]
        for name, value in self._state.response_headers.items():
            key = name.lower().encode()
            if key not in present:
                headers.append((key, value.encode()))
        headers.append((HEADER, self._state.request_id.encode()))
        if self._keep and any(k.lower() == b"cache-control" and b"no-store" in v.lower() for k, v in headers):
            self._keep = False
        message = {**message, "headers": headers}
        if any(k.lower() == b"content-type" and v.startswith(PROBLEM_JSON) for k, v in headers):
            self._held = message
            return None
        return message

    def _problem_with_request_id(self) -> tuple[dict, dict]:
        start, self._held = self._held, None
        body = self.problem_body = b"".join(self._chunks)
        if body:  # a HEAD answer has none: its Content-Length stays the GET's
            body = self.problem_body = with_request_id(body, self._state.request_id)
            start["headers"] = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"] + [
                (b"content-length", str(len(body)).encode())
            ]
        return start, {"type": "http.response.body", "body": body}


class RequestGuard:
    """The app's outermost ASGI layer, in named steps: refuse a path with control characters; read
    the body in full (at most the operation's limit, within BODY_TIMEOUT_SECONDS, nesting at most
    MAX_JSON_DEPTH), refusing it before the API's security runs, so a refused body spends no quota;
    start the request's state (levqor_core.web.request_state); add the headers and Request-Id to
    every response, errors included (_Response); record every request in the metrics and each
    account's API calls in the request log."""

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
        state = request_state.begin(scope, new_request_id(), self.flask_app.extensions)
        security_headers = [NOSNIFF, HSTS] if scope.get("scheme") == "https" else [NOSNIFF]
        response = _Response(send, state, security_headers, api_call=is_api_path(scope.get("path", "")))
        at, started = time.time(), time.perf_counter()
        try:
            await self._guarded(scope, receive, response.send, state)
        finally:
            self._record(scope, state, response, at, time.perf_counter() - started)

    async def _guarded(self, scope, receive, send, state: request_state.RequestState):
        if _CONTROL.search(scope.get("path", "")):
            # Starlette's router refuses these where Flask's would not, so refuse them up front.
            return await _send_problem(send, problems.BadRequest("The URL path contains control characters."))
        headers = dict(scope.get("headers") or [])
        if (
            (declared := headers.get(b"content-length")) is not None
            and declared != b"0"
            or (b"transfer-encoding" in headers)
        ):
            refusal = await self._read_body(scope, receive, headers, state)
            if refusal is not None:
                problem, close = refusal
                if problem is not None:  # None: the client left mid-body, nobody to answer
                    await _send_problem(send, problem, close)
                return
            receive = _replay(state.body, receive)
        await self.app(scope, receive, send)

    def _limit(self, scope) -> int:
        """The body limit of the operation at this path (the spec's `x-levqor-max-body-bytes`), else the app's."""
        return self.body_limits.get(scope.get("path"), self.max_body_bytes)

    async def _read_body(self, scope, receive, headers: dict, state) -> tuple | None:
        """Read the whole body into `state.body`; or (the problem to answer, close the connection?)."""
        limit = self._limit(scope)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return _too_large(limit), False
        body = bytearray()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_TIMEOUT_SECONDS
        while True:
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except TimeoutError:
                timeout = f"The request body must arrive within {BODY_TIMEOUT_SECONDS:g} s."
                return problems.RequestTimeout(timeout), True
            if message["type"] == "http.disconnect":
                return None, False
            body.extend(message.get("body", b""))
            if len(body) > limit:  # chunked bodies declare no length
                return _too_large(limit), True
            if not message.get("more_body"):
                break
        content_type = headers.get(b"content-type", b"").lower()
        if not content_type.startswith(_NOT_JSON) and json_depth_exceeds(body):
            deep = f"JSON bodies may nest arrays and objects at most {MAX_JSON_DEPTH} deep."
            return problems.NestingTooDeep(deep), False
        state.body = bytes(body)
        if declared is None:
            # A chunked body, now read: Connexion takes a request without Content-Length for one
            # without a body ("RequestBody is required"), so say how long it was.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"transfer-encoding"] + [
                (b"content-length", str(len(body)).encode())
            ]
        return None

    def _record(self, scope, state: request_state.RequestState, response: _Response, at: float, seconds: float):
        """The request in the metrics; an account's call in its request log."""
        status = response.status
        request_metrics.record(scope, status, seconds, (response.problem_body or b"") if status == 429 else None)
        if state.account_id is None or self.request_log is None:
            return
        self.request_log.start()
        self.request_log.add(
            request_log.entry(
                at,
                state.account_id,
                state.key_id,
                state.request_id,
                scope.get("method", ""),
                scope.get("path", ""),
                scope.get("query_string", b""),
                status,
                seconds,
                state.body[:LOGGED_BODY_BYTES] if state.body else None,
                response.body,
            )
        )


async def _send_problem(send, problem: problems.Problem, close: bool = False):
    body = problem.json_bytes()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body may still be on its way: this connection is done
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
