"""Listening sessions (`levqor listen`): a webhook endpoint of its own kind, alive while its stream
is open. It is signed for exactly as an endpoint is (Standard Webhooks, webhooks.delivery), with a
`whsec_` secret that is the same for every session of an account and mode, as Stripe's CLI's is,
so a developer configures their local receiver once. The secret is derived from SECRET_KEY (HMAC
with a key derived for this use only), never stored in clear; rotating SECRET_KEY changes it."""

import base64
import hashlib
import hmac
import json
import secrets as token
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from levqor_core.extensions import db
from levqor_core.webhooks import delivery, secrets
from levqor_core.webhooks.models import EndpointKind, WebhookEndpoint
from levqor_core.webhooks.service import EVENT_TYPES

FORWARD_TO_CHARS = 200
USER_AGENT = delivery.USER_AGENT


def listening_secret(secret_key: str, account_id: int, sandbox: bool) -> str:
    """The account's listening secret for this mode (`whsec_` + base64 of 24 bytes, as endpoints')."""
    derived = hashlib.sha256(b"levqor listening sessions\x00" + secret_key.encode()).digest()
    mac = hmac.new(derived, f"{account_id}:{'sandbox' if sandbox else 'live'}".encode(), hashlib.sha256).digest()
    return secrets.PREFIX + base64.b64encode(mac[:24]).decode()


def open_session(
    account_id: int, *, sandbox: bool, events: list[str], forward_to: str | None, secret_key: str
) -> WebhookEndpoint:
    """Register a listening session (committed) and return it."""
    now = datetime.now(UTC)
    session = WebhookEndpoint(
        id=f"wl_{token.token_hex(12)}",
        account_id=account_id,
        url=(forward_to or "levqor listen")[:FORWARD_TO_CHARS],
        events_json=json.dumps(events or list(EVENT_TYPES)),
        sandbox=sandbox,
        secret_encrypted=secrets.encrypt(listening_secret(secret_key, account_id, sandbox), secret_key),
        kind=EndpointKind.LISTENER,
        created_at=now,
        last_seen_at=now,
    )
    db.session.add(session)
    db.session.commit()
    return session


def seen(session_id: str) -> None:
    """A heartbeat went out to the session: it is still listening."""
    db.session.execute(
        sa.update(WebhookEndpoint).where(WebhookEndpoint.id == session_id).values(last_seen_at=datetime.now(UTC))
    )
    db.session.commit()


def close_session(session_id: str) -> None:
    db.session.execute(
        sa.delete(WebhookEndpoint).where(
            WebhookEndpoint.id == session_id, WebhookEndpoint.kind == EndpointKind.LISTENER
        )
    )
    db.session.commit()


def active_sessions(account_id: int, stale_after: timedelta) -> list[WebhookEndpoint]:
    """The account's listening sessions that sent a heartbeat within `stale_after`, newest first."""
    return list(
        db.session.scalars(
            sa.select(WebhookEndpoint)
            .where(
                WebhookEndpoint.account_id == account_id,
                WebhookEndpoint.kind == EndpointKind.LISTENER,
                WebhookEndpoint.last_seen_at >= datetime.now(UTC) - stale_after,
            )
            .order_by(WebhookEndpoint.created_at.desc())
        )
    )


def sweep_stale(stale_after: timedelta) -> int:
    """Delete sessions whose process died mid-stream (no heartbeat within `stale_after`); how many."""
    gone = db.session.execute(
        sa.delete(WebhookEndpoint).where(
            WebhookEndpoint.kind == EndpointKind.LISTENER,
            WebhookEndpoint.last_seen_at < datetime.now(UTC) - stale_after,
        )
    )
    db.session.commit()
    return gone.rowcount


def signed_request(secret: str, event_id: str, body: str) -> dict:
    """What the CLI forwards unchanged: the headers an endpoint would get, and the body."""
    headers = delivery.signed_headers(secret, event_id, body, datetime.now(UTC))
    headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
    return {"headers": headers, "body": body}
