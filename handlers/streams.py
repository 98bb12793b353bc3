"""/v1/events/stream, /sandbox/v1/events/stream and /v1/request_log/stream: Server-Sent Events,
served from the event loop by the async host (levqor_core.web.stream_host)."""

from connexion import request
from starlette.responses import Response

from levqor_core.web import streams as sessions


async def stream_events(*, events: str | None = None, forward_to: str | None = None) -> Response:
    """The account's live webhook events, signed for a listening session, as they are emitted."""
    return await sessions.events_response(request, sandbox=False, events=events, forward_to=forward_to)


async def sandbox_stream_events(*, events: str | None = None, forward_to: str | None = None) -> Response:
    """The account's sandbox webhook events, signed for a listening session, as they are emitted."""
    return await sessions.events_response(request, sandbox=True, events=events, forward_to=forward_to)


async def stream_request_log(*, status: str | None = None, path: str | None = None) -> Response:
    """The account's API calls as they are recorded (the request log's fields, redacted)."""
    return await sessions.request_log_response(request, status=status, path=path)
