"""What the streams read, written where it happens: a Redis Stream per account and mode of its
webhook events (events.emit) and one of its recorded calls (the request log's flush thread), plus
a control stream that tells an account's open streams a key was retired.

Keys share the account's hash tag (`lvq:{a<id>}:…`) so one XREAD of several of them stays in one
slot on Redis Cluster. Entries older than RESUME_WINDOW_SECONDS are trimmed (XADD MINID, approximate)
and an idle stream's key expires, so a client can resume with Last-Event-ID within that window and
nothing grows for accounts nobody listens to. No web framework here: the worker writes too."""

import json
import logging
import secrets
import time

import redis

log = logging.getLogger(__name__)

RESUME_WINDOW_SECONDS = 300
EVENT_FIELD = b"e"  # an events entry: the event's JSON (id, type, body)
CALL_FIELD = b"c"  # a log entry: the call as the portal shows it (JSON)
RETIRED_FIELD = b"retired"  # a control entry: a key whose streams end now
GRACE_ENDS_FIELD = b"grace_ends"  # a control entry: a key rolled, and when (epoch s) its grace ends
KEY_FIELD = b"key"  # beside GRACE_ENDS_FIELD: which key


def events_key(account_id: int, sandbox: bool) -> str:
    return f"lvq:{{a{account_id}}}:events:{'sandbox' if sandbox else 'live'}"


def log_key(account_id: int) -> str:
    return f"lvq:{{a{account_id}}}:log"


def control_key(account_id: int) -> str:
    return f"lvq:{{a{account_id}}}:control"


def slots_key(account_id: int) -> str:
    """The account's open streams (a sorted set: stream id → when its slot lapses)."""
    return f"lvq:{{a{account_id}}}:streams"


def _min_id(now: float) -> str:
    return f"{int((now - RESUME_WINDOW_SECONDS) * 1000)}-0"


def _add(pipe, key: str, fields: dict, now: float) -> None:
    pipe.xadd(key, fields, minid=_min_id(now), approximate=True)
    pipe.expire(key, 2 * RESUME_WINDOW_SECONDS)


def new_event_id() -> str:
    """The event's id, sent as `webhook-id` to a listening session (the same on a resumed stream)."""
    return f"evt_{secrets.token_hex(16)}"


def publish_event(r: redis.Redis, account_id: int, sandbox: bool, event_type: str, body: str) -> None:
    """Add one emitted event (its body exactly as endpoints get it) to the account's stream."""
    entry = json.dumps({"id": new_event_id(), "type": event_type, "body": body}, separators=(",", ":"))
    pipe = r.pipeline(transaction=False)
    _add(pipe, events_key(account_id, sandbox), {EVENT_FIELD: entry}, time.time())
    pipe.execute()


def publish_calls(r: redis.Redis, rows: list[dict]) -> None:
    """Add recorded calls (request-log rows, redacted) to their accounts' log streams, in one round trip."""
    if not rows:
        return
    now = time.time()
    pipe = r.pipeline(transaction=False)
    for row in rows:
        _add(pipe, log_key(row["account_id"]), {CALL_FIELD: json.dumps(shown_call(row), separators=(",", ":"))}, now)
    pipe.execute()


def shown_call(row: dict) -> dict:
    """A request-log row as the portal shows it: without the account, its time as ISO 8601."""
    shown = {k: v for k, v in row.items() if k != "account_id"}
    shown["at"] = row["at"].isoformat()
    return shown


def retire_keys(
    r: redis.Redis, retired: dict[int, list[str]], grace_ends: dict[int, dict[str, float]] | None = None
) -> None:
    """Tell the streams of each account that these keys no longer authenticate, and that these
    others (rolled, in their grace period) stop authenticating at the time given (epoch seconds)."""
    if not retired and not grace_ends:
        return
    pipe = r.pipeline(transaction=False)
    now = time.time()
    for account_id, key_ids in retired.items():
        for key_id in key_ids:
            _add(pipe, control_key(account_id), {RETIRED_FIELD: key_id}, now)
    for account_id, ends in (grace_ends or {}).items():
        for key_id, at in ends.items():
            _add(pipe, control_key(account_id), {KEY_FIELD: key_id, GRACE_ENDS_FIELD: repr(at)}, now)
    pipe.execute()
