"""The stream operations' responses: who may open one (the gate already admitted the key), its
slot, its listening session, and the StreamingResponse that serves it from the event loop
(levqor_core.streams.live). Database work (the tier, the session row) runs in a worker thread.
The streams' Redis is the limits Redis (LIMITS_REDIS_URL; REDIS_URL's server when unset), a
Redis Cluster when it names one: a stream's keys are on its account's shard."""

import asyncio
import json
from dataclasses import dataclass
from datetime import timedelta

import redis.cluster
from flask import Flask
from starlette.responses import Response, StreamingResponse

from levqor_core import problems, tiers
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.keys.models import ApiKey
from levqor_core.streams import feed, live
from levqor_core.streams import hub as stream_hub
from levqor_core.web import request_state
from levqor_core.webhooks import listening
from levqor_core.webhooks.service import EVENT_TYPES

EXTENSION = "levqor.streams"
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
# Proxies (nginx, Heroku's router) must pass each event on at once, and nobody may cache one.
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@dataclass
class Streams:
    """What the stream handlers need of the app, kept in its extensions."""

    flask_app: Flask
    redis_url: str
    cluster: bool
    secret_key: str
    timing: live.Timing

    @classmethod
    def from_app(cls, app: Flask) -> "Streams":
        return cls(
            app,
            app.config["LIMITS_REDIS_URL"],
            isinstance(app.extensions["levqor.limits_redis"], redis.cluster.RedisCluster),
            app.config["SECRET_KEY"],
            live.Timing(app.config["STREAM_HEARTBEAT_SECONDS"], app.config["STREAM_IDLE_SECONDS"]),
        )

    def hub(self) -> stream_hub.Hub:
        """This event loop's reader and command client for the streams."""
        return stream_hub.hub(self.redis_url, self.cluster, command_timeout=2)

    def in_app(self, fn, *args):
        """Run `fn` in a worker thread inside an app context (the database is synchronous)."""

        def call():
            with self.flask_app.app_context():
                return fn(*args)

        return asyncio.to_thread(call)

    @property
    def stale_after(self) -> timedelta:
        return timedelta(seconds=self.timing.slot_ttl)


def _caller(req) -> tuple[request_state.RequestState, Streams]:
    state = request_state.of(req.scope)
    return state, state.extensions[EXTENSION]


def _opening(account_id: int, key_id: str | None) -> tuple[int, float | None]:
    """The tier's stream limit, and when the calling key's grace period ends (epoch seconds) if it
    was rolled: its streams end then."""
    account = db.session.get(Account, account_id)
    if account is None:
        raise problems.NotAuthenticated("This account no longer exists.")
    key = db.session.get(ApiKey, key_id) if key_id else None
    grace_ends = key.expires_at.timestamp() if key is not None and key.expires_at is not None else None
    return tiers.get(account.tier).max_streams, grace_ends


def _event_types(events: str | None) -> list[str]:
    wanted = [e.strip() for e in (events or "").split(",") if e.strip()]
    unknown = sorted(set(wanted) - set(EVENT_TYPES))
    if unknown:
        raise problems.BadRequest(f"Unknown event types: {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}.")
    return wanted


async def _open(req, streams: Streams, state) -> tuple:
    after = live.resume_from(req.headers.get("last-event-id"))
    limit, grace_ends = await streams.in_app(_opening, state.account_id, state.key_id)
    streams_hub = streams.hub()
    stream_id = await live.take_slot(streams_hub, state.account_id, limit, streams.timing)
    return streams_hub, stream_id, after, grace_ends


def _respond(body) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers=HEADERS)


def _head() -> Response:
    """A HEAD: the GET's status and headers, and no stream (which would never end)."""
    return Response(media_type="text/event-stream", headers=HEADERS)


async def events_response(req, *, sandbox: bool, events: str | None, forward_to: str | None) -> Response:
    """A listening session's stream: each event as the signed request an endpoint would get."""
    state, streams = _caller(req)
    wanted = _event_types(events)
    if req.method == "HEAD":
        return _head()
    streams_hub, stream_id, after, grace_ends = await _open(req, streams, state)
    try:
        await streams.in_app(listening.sweep_stale, streams.stale_after)
        session_id = await streams.in_app(
            lambda: (
                listening.open_session(
                    state.account_id,
                    sandbox=sandbox,
                    events=wanted,
                    forward_to=forward_to,
                    secret_key=streams.secret_key,
                ).id
            )
        )
    except BaseException:
        await live.release_slot(streams_hub, state.account_id, stream_id)
        raise
    secret = listening.listening_secret(streams.secret_key, state.account_id, sandbox)

    def render(entry_id: bytes, fields: dict) -> bytes | None:
        event = json.loads(fields[feed.EVENT_FIELD])
        if wanted and event["type"] not in wanted:
            return None
        signed = listening.signed_request(secret, event["id"], event["body"])
        return live.sse("webhook", {"type": event["type"], "webhook_id": event["id"], **signed}, entry_id)

    body = live.serve(
        streams_hub,
        account_id=state.account_id,
        key_id=state.key_id,
        grace_ends=grace_ends,
        feed_key=feed.events_key(state.account_id, sandbox),
        after=after,
        render=render,
        timing=streams.timing,
        stream_id=stream_id,
        ready={"session_id": session_id, "secret": secret, "sandbox": sandbox, "events": wanted or list(EVENT_TYPES)},
        on_heartbeat=lambda: streams.in_app(listening.seen, session_id),
        on_close=lambda: streams.in_app(listening.close_session, session_id),
    )
    return _respond(body)


def _status_matches(wanted: str | None, status: int) -> bool:
    if not wanted:
        return True
    if wanted in STATUS_CLASSES:
        return str(status)[0] == wanted[0]
    return str(status) == wanted


def _check_status(status: str | None) -> None:
    if status and status not in STATUS_CLASSES and not (status.isdigit() and len(status) == 3):
        raise problems.BadRequest("`status` is a class (2xx, 3xx, 4xx, 5xx) or a code such as 404.")


async def request_log_response(req, *, status: str | None, path: str | None) -> Response:
    """The account's calls as they are recorded, filtered by status and path prefix."""
    state, streams = _caller(req)
    _check_status(status)
    if req.method == "HEAD":
        return _head()
    streams_hub, stream_id, after, grace_ends = await _open(req, streams, state)

    def render(entry_id: bytes, fields: dict) -> bytes | None:
        raw = fields[feed.CALL_FIELD]  # one line of JSON, as the recorder wrote it: sent as is
        if status or path:
            call = json.loads(raw)
            if not _status_matches(status, call["status"]) or (path and not call["path"].startswith(path)):
                return None
        return live.sse_raw("request", raw, entry_id)

    body = live.serve(
        streams_hub,
        account_id=state.account_id,
        key_id=state.key_id,
        grace_ends=grace_ends,
        feed_key=feed.log_key(state.account_id),
        after=after,
        render=render,
        timing=streams.timing,
        stream_id=stream_id,
        ready={"status": status, "path": path},
    )
    return _respond(body)
