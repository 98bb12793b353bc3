"""Webhook endpoints (create, list, delete, test) and events: what an account subscribes to, and
the deliveries an event makes. Called by the API handlers, the portal and the worker alike."""

import json
import secrets as token
from datetime import UTC, datetime

import sqlalchemy as sa

from levqor_core import problems, tiers
from levqor_core.accounts import deletion
from levqor_core.accounts.models import Account
from levqor_core.extensions import db
from levqor_core.webhooks import dispatch, secrets, targets
from levqor_core.webhooks.models import (
    ONE_PENDING_PING_INDEX,
    DeliveryStatus,
    EndpointKind,
    WebhookDelivery,
    WebhookEndpoint,
)

JOB_EVENTS = ("job.succeeded", "job.failed", "job.canceled")
QUOTA_EVENTS = ("quota.warning", "quota.exceeded")
KEY_EVENTS = ("key.rolled", "key.revoked", "key.leaked")
EVENT_TYPES = (*JOB_EVENTS, *QUOTA_EVENTS, *KEY_EVENTS)
PING = "ping"  # sent only by the test action, to one endpoint


class EndpointRefused(problems.BadRequest):
    """The endpoint cannot be made as asked; the detail says why."""

    slug, title = "invalid-webhook-endpoint", "Invalid webhook endpoint"


class TooManyEndpoints(problems.Conflict):
    slug, title = "webhook-endpoint-limit-reached", "Webhook endpoint limit reached"

    def __init__(self, limit: int):
        super().__init__(f"Your plan allows {limit} webhook endpoints here; delete one first.", limit=limit)
        self.limit = limit


def create_endpoint(
    account,
    url: str,
    events: list[str],
    *,
    sandbox: bool,
    secret_key: str,
    allow_private: bool,
    resolve: targets.Resolver = targets.system_resolver,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret, which is returned this once."""
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise EndpointRefused(f"Unknown event types: {', '.join(unknown)}. Known: {', '.join(EVENT_TYPES)}.")
    if not events:
        raise EndpointRefused("Subscribe to at least one event type.")
    try:
        targets.check(url, allow_private, resolve)
    except targets.TargetRefused as refused:
        raise EndpointRefused(str(refused)) from refused
    limit = tiers.get(account.tier).max_webhook_endpoints
    # The account row is locked while counting, so concurrent creations cannot pass the cap together.
    # (By the model, not type(account): the portal passes Flask-Login's proxy to the account.)
    db.session.execute(sa.select(Account.id).where(Account.id == account.id).with_for_update())
    if _count(account.id, sandbox) >= limit:
        db.session.rollback()
        raise TooManyEndpoints(limit)
    raw_secret = secrets.new_secret()
    endpoint = WebhookEndpoint(
        id=f"we_{token.token_hex(12)}",
        account_id=account.id,
        url=url,
        events_json=json.dumps(sorted(set(events), key=EVENT_TYPES.index)),
        sandbox=sandbox,
        secret_encrypted=secrets.encrypt(raw_secret, secret_key),
    )
    db.session.add(endpoint)
    db.session.commit()
    return endpoint, raw_secret


def _count(account_id: int, sandbox: bool) -> int:
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(WebhookEndpoint)
        .where(
            WebhookEndpoint.account_id == account_id,
            WebhookEndpoint.sandbox == sandbox,
            WebhookEndpoint.kind == EndpointKind.ENDPOINT,
        )
    )


def endpoints_of(account_id: int, sandbox: bool) -> list[WebhookEndpoint]:
    return list(
        db.session.scalars(
            sa.select(WebhookEndpoint)
            .where(
                WebhookEndpoint.account_id == account_id,
                WebhookEndpoint.sandbox == sandbox,
                WebhookEndpoint.kind == EndpointKind.ENDPOINT,  # listening sessions get events by stream
            )
            .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
    )


def endpoint_of(account_id: int, endpoint_id: str, sandbox: bool | None) -> WebhookEndpoint | None:
    """The account's endpoint with this id (None for another account's: its existence is not told).
    `sandbox=None` finds either side (the portal shows both on one page)."""
    query = sa.select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id,
        WebhookEndpoint.account_id == account_id,
        WebhookEndpoint.kind == EndpointKind.ENDPOINT,
    )
    if sandbox is not None:
        query = query.where(WebhookEndpoint.sandbox == sandbox)
    return db.session.scalar(query)


def delete_endpoint(endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint; its pending deliveries and log go with it. Waits for an attempt in
    flight to it (webhooks.delivery holds its row): none reaches the receiver after this returns."""
    # The endpoint's row first, as the attempts lock it before they touch their delivery: deleting
    # the deliveries first would hold a row an attempt is about to update while it waits (deadlock).
    db.session.execute(sa.select(WebhookEndpoint.id).where(WebhookEndpoint.id == endpoint.id).with_for_update())
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    db.session.delete(endpoint)
    db.session.commit()


def event_body(event_type: str, data: dict, sandbox: bool, now: datetime) -> str:
    """An event's body, byte for byte as signed and sent."""
    return json.dumps(
        {"type": event_type, "timestamp": now.isoformat(), "data": {**data, "sandbox": sandbox}},
        separators=(",", ":"),
        sort_keys=True,
    )


def _delivery(endpoint: WebhookEndpoint, event_type: str, body: str, now: datetime) -> WebhookDelivery:
    return WebhookDelivery(
        id=f"msg_{token.token_hex(16)}",
        endpoint_id=endpoint.id,
        event_type=event_type,
        payload=body,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


def record_event(
    account_id: int, event_type: str, data: dict, *, sandbox: bool, now: datetime | None = None
) -> list[str]:
    """Deliveries of one event to each of the account's enabled endpoints subscribed to it;
    their ids, to enqueue once the caller has committed."""
    assert event_type in EVENT_TYPES, event_type
    now = now or datetime.now(UTC)
    subscribed = [e for e in endpoints_of(account_id, sandbox) if e.disabled_at is None and e.subscribes_to(event_type)]
    if not subscribed:
        return []
    body = event_body(event_type, data, sandbox, now)
    deliveries = [_delivery(endpoint, event_type, body, now) for endpoint in subscribed]
    db.session.add_all(deliveries)
    return [d.id for d in deliveries]


def withdraw(delivery_ids: list[str]) -> int:
    """Delete these deliveries if none of their attempts has started; how many went."""
    gone = db.session.execute(
        sa.delete(WebhookDelivery).where(
            WebhookDelivery.id.in_(delivery_ids),
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.attempts == 0,
        )
    )
    db.session.commit()
    return gone.rowcount


def ping(endpoint: WebhookEndpoint, now: datetime | None = None) -> str:
    """A `ping` delivery to this one endpoint (the test action), committed; its id."""
    now = now or datetime.now(UTC)
    delivery = _delivery(endpoint, PING, event_body(PING, {"endpoint_id": endpoint.id}, endpoint.sandbox, now), now)
    db.session.add(delivery)
    _commit_unless_ping_pending()
    return delivery.id


def _commit_unless_ping_pending() -> None:
    """Commit; a second pending test event for an endpoint (refused by the database's unique
    index) is AlreadyPending."""
    try:
        db.session.commit()
    except sa.exc.IntegrityError as err:
        db.session.rollback()
        if not any(marker in str(err.orig) for marker in _ONE_PENDING_PING_VIOLATED):
            raise
        raise AlreadyPending(
            "A test event to this endpoint is still pending; wait for it before sending another."
        ) from None


# How PostgreSQL (by the index's name) and SQLite (by its column) report the violated index.
_ONE_PENDING_PING_VIOLATED = (ONE_PENDING_PING_INDEX, "webhook_deliveries.endpoint_id")


class AlreadyPending(problems.Conflict):
    slug, title = "webhook-delivery-pending", "Webhook delivery already pending"


def resend(delivery: WebhookDelivery, now: datetime | None = None) -> None:
    """Deliver again, with the same webhook-id and body, on a fresh retry schedule. Only a
    finished delivery: one still pending already has an attempt coming (resending it would let a
    second attempt run beside one in flight, and let a stranger's clicks fill the webhook queue)."""
    if delivery.status == DeliveryStatus.PENDING:
        raise AlreadyPending("This delivery is still pending: its next attempt is already scheduled.")
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now or datetime.now(UTC)
    _commit_unless_ping_pending()  # a finished ping, resent while another test event is pending


def delivery_of(account_id: int, delivery_id: str) -> WebhookDelivery:
    """The account's delivery, or 404 (another account's is not told apart from none)."""
    found = db.session.scalar(
        sa.select(WebhookDelivery)
        .join(WebhookEndpoint)
        .where(WebhookDelivery.id == delivery_id, WebhookEndpoint.account_id == account_id)
    )
    if found is None:
        raise problems.NotFound(f"No webhook delivery {delivery_id} on this account.")
    return found


def redeliver(delivery: WebhookDelivery) -> None:
    """Resend a delivery and queue its attempt (the portal's "Resend")."""
    resend(delivery)
    dispatch.enqueue([delivery.id])


def deliveries_of(account_id: int, endpoint_id: str | None = None, limit: int = 50) -> list[WebhookDelivery]:
    """The account's newest deliveries (of one endpoint, or all)."""
    query = (
        sa.select(WebhookDelivery)
        .join(WebhookEndpoint)
        .where(WebhookEndpoint.account_id == account_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        .limit(limit)
    )
    if endpoint_id:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    return list(db.session.scalars(query))


def owned(account_id: int, endpoint_id: str, sandbox: bool | None) -> WebhookEndpoint:
    """The account's endpoint, or 404 (another account's endpoint is not told apart from none)."""
    endpoint = endpoint_of(account_id, endpoint_id, sandbox)
    if endpoint is None:
        raise problems.NotFound(f"No webhook endpoint {endpoint_id} on this account.")
    return endpoint


def send_test(endpoint: WebhookEndpoint) -> WebhookDelivery:
    """Queue a `ping` to the endpoint; the delivery."""
    if endpoint.disabled_at is not None:
        raise problems.Conflict("This endpoint was disabled after failing for days; delete it and create it again.")
    # One test event in flight per endpoint (a slow receiver cannot be made to hold the webhook
    # workers by sending tests faster than they finish): the database's unique index holds it, so
    # ping() raises AlreadyPending for a second one, however many requests arrive at once.
    delivery_id = ping(endpoint)
    dispatch.enqueue([delivery_id])
    return db.session.get(WebhookDelivery, delivery_id)


@deletion.step("webhook-rows", deletion.ROWS, tables=("webhook_endpoints", "webhook_deliveries"))
def _delete_webhook_rows(account: Account, _actor) -> None:
    endpoints = sa.select(WebhookEndpoint.id).where(WebhookEndpoint.account_id == account.id)
    db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.endpoint_id.in_(endpoints)))
    db.session.execute(sa.delete(WebhookEndpoint).where(WebhookEndpoint.account_id == account.id))
