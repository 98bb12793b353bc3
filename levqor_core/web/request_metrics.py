"""ASGI middleware that counts and times every HTTP request into the ops metrics (`levqor_core.ops.metrics`).

Per request it only touches in-process state: the Prometheus counters and histogram and the daily
totals, which a background thread adds to Redis, so the hot path makes no extra round trip."""

import json
import time

import redis

from levqor_core.ops.metrics import KNOWN_METHODS, LATENCY, REFUSALS, REQUESTS, STATS


class MetricsMiddleware:
    """Counts and times every HTTP request; reads the problem type of 429 answers."""

    def __init__(self, app, redis_client: redis.Redis | None = None, flush_seconds: float = 10.0):
        self.app = app
        self.redis = redis_client
        self.flush_seconds = flush_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.redis is not None:
            STATS.start(self.redis, self.flush_seconds)
        # Connexion's router records the operation in a shallow copy of the scope: sharing the
        # extensions dict lets us read it afterwards.
        scope.setdefault("extensions", {})
        started = time.perf_counter()
        status = 500
        refusal: list[bytes] | None = None

        async def observe(message):
            nonlocal status, refusal
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 429:
                    refusal = []
            elif refusal is not None and message["type"] == "http.response.body":
                refusal.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            seconds = time.perf_counter() - started
            operation = _operation(scope)
            refused = _problem_slug(b"".join(refusal)) if refusal is not None else None
            label = str(status)
            method = scope.get("method", "")
            REQUESTS.labels(operation, method if method in KNOWN_METHODS else "other", label).inc()
            LATENCY.labels(operation, label).observe(seconds)
            if refused is not None:
                REFUSALS.labels(refused).inc()
            STATS.add(status, seconds, refused)


def _operation(scope) -> str:
    routing = (scope.get("extensions") or {}).get("connexion_routing") or {}
    if routing.get("operation_id"):
        # Connexion reports "handlers.<module>.<operationId>"; the spec's operationId is the label.
        return routing["operation_id"].rsplit(".", 1)[-1]
    path = scope.get("path", "")
    if path.startswith("/api/"):
        return "api_other"  # docs, spec, or no such operation: bounded label values
    if path == "/metrics":
        return "metrics"
    if path.startswith("/static/"):
        return "static"
    return "portal"


def _problem_slug(body: bytes) -> str:
    try:
        type_ = json.loads(body).get("type") or ""
    except (ValueError, AttributeError):
        return "unknown"
    return type_.rstrip("/").rsplit("/", 1)[-1] or "unknown"
