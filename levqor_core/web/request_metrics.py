"""What every HTTP request adds to the ops metrics (`levqor_core.ops.metrics`), recorded by the
app's ASGI middleware (`levqor_core.web.request_guard`) when the response has gone.

Per request it only touches in-process state: the Prometheus counters and histogram and the daily
totals, which a background thread adds to Redis, so the hot path makes no extra round trip."""

import json

from levqor_core.ops.metrics import KNOWN_METHODS, LATENCY, REFUSALS, REQUESTS, STATS
from levqor_core.web.api_paths import is_api_path

# Prometheus children by label values (bounded: operations x methods x statuses); labels() takes a
# lock and builds the key on every call.
_requests: dict[tuple, object] = {}
_latencies: dict[tuple, object] = {}


def record(scope, status: int, seconds: float, refusal_body: bytes | None) -> None:
    """Count and time one answered request; `refusal_body` is a 429's body (its problem type)."""
    operation = _operation(scope)
    refused = _problem_slug(refusal_body) if refusal_body is not None else None
    label = str(status)
    method = scope.get("method", "")
    key = (operation, method if method in KNOWN_METHODS else "other", label)
    counter = _requests.get(key)
    if counter is None:
        counter = _requests[key] = REQUESTS.labels(*key)
    counter.inc()
    histogram = _latencies.get(key[::2])
    if histogram is None:
        histogram = _latencies[key[::2]] = LATENCY.labels(operation, label)
    histogram.observe(seconds)
    if refused is not None:
        REFUSALS.labels(refused).inc()
    STATS.add(status, seconds, refused)


def start_flusher(redis_client, flush_seconds: float) -> None:
    """The thread that adds the daily totals to Redis (once per process, on its first request)."""
    STATS.start(redis_client, flush_seconds)


def _operation(scope) -> str:
    routing = (scope.get("extensions") or {}).get("connexion_routing") or {}
    if routing.get("operation_id"):
        # Connexion reports "handlers.<module>.<operationId>"; the spec's operationId is the label.
        return routing["operation_id"].rsplit(".", 1)[-1]
    path = scope.get("path", "")
    if is_api_path(path):
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
