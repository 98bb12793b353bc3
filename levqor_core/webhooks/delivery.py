"""One delivery attempt, and the retry schedule around it.

An attempt leases its delivery with one conditional UPDATE (due, pending, lease not held), so two
workers (a retry and a resend, or the sweep and the scheduler) never send the same attempt twice.
It checks the target again, connects to the address it checked, signs with the standardwebhooks
library and posts with a 10 s timeout, following no redirect; any 2xx is success. Through the post
it holds a KEY SHARE lock on its endpoint's row, which deleting the endpoint waits for: once the
developer has the delete's answer no attempt reaches the receiver, and an attempt that finds the
endpoint gone sends nothing. An attempt started a moment early is queued again for its time
(`early_until`), not left to the sweep. Otherwise the
next attempt is scheduled by RETRY_DELAYS (the Standard Webhooks suggestion: 5 s, 5 min, 30 min,
2 h, 5 h, 10 h, 10 h, about 28 hours in all); an endpoint failing without a success for
DISABLE_AFTER is disabled and its owner told."""

import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from standardwebhooks.webhooks import Webhook

from levqor_core.extensions import db
from levqor_core.webhooks import secrets, targets
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

log = logging.getLogger(__name__)

# How early an attempt may start and still be put back at its time rather than left to the sweep:
# RQ's scheduler keeps a time in whole seconds (rounded down) and polls each second, so a retry can
# start up to ~2 s before it is due. A lease held by another attempt is ~LEASE ahead: not early.
EARLY_BY_AT_MOST = timedelta(seconds=10)

RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
TIMEOUT_SECONDS = 10
LEASE = timedelta(seconds=60)  # longer than one attempt can take
DISABLE_AFTER = timedelta(days=5)
EXCERPT_BYTES = 512
USER_AGENT = "Levqor-Webhooks/1"


def _lease(delivery_id: str, now: datetime) -> bool:
    """Take the delivery for one attempt: only a pending one that is due."""
    taken = db.session.execute(
        sa.update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + LEASE)
    )
    db.session.commit()
    return taken.rowcount == 1


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    timestamp = datetime.fromtimestamp(int(now.timestamp()), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, timestamp, body),
    }


def _post(target: targets.Target, headers: dict[str, str], body: str) -> tuple[int, str]:
    """POST to the checked address, naming the host for HTTP and TLS; (status, start of the body)."""
    address = f"[{target.address}]" if ":" in target.address else target.address
    url = f"{target.scheme}://{address}:{target.port}{target.path}"
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as http:
        request = http.build_request(
            "POST",
            url,
            content=body.encode(),
            headers={
                **headers,
                "host": host,
                "content-type": "application/json",
                "user-agent": USER_AGENT,
            },
            extensions=extensions,
        )
        response = http.send(request, stream=True)
        try:
            excerpt = b""
            for chunk in response.iter_raw():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_BYTES:
                    break
        finally:
            response.close()
    return response.status_code, excerpt[:EXCERPT_BYTES].decode("utf-8", "replace")


def attempt(
    delivery_id: str,
    *,
    secret_key: str | list[str],  # SECRET_KEY, or derived_keys.secret_keys (it and its older values)
    allow_private: bool,
    now: datetime | None = None,
    resolve: targets.Resolver = targets.system_resolver,
    on_disabled=None,
) -> str | None:
    """One attempt at a delivery if it is due; its status afterwards (None: not due, taken, or its
    endpoint deleted)."""
    now = now or datetime.now(UTC)
    if not _lease(delivery_id, now):
        return None
    endpoint = _locked_endpoint(delivery_id)
    delivery = db.session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if endpoint is None or delivery is None:
        db.session.rollback()
        return None  # deleted (with its deliveries) since the lease: nothing is sent
    if endpoint.disabled_at is not None:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        delivery.last_error = "endpoint disabled"
        db.session.commit()
        return DeliveryStatus.FAILED
    status_code, excerpt, error = None, None, None
    started = time.perf_counter()
    try:
        target = targets.check(endpoint.url, allow_private, resolve)
        headers = signed_headers(
            secrets.decrypt(endpoint.secret_encrypted, secret_key), delivery.id, delivery.payload, now
        )
        status_code, excerpt = _post(target, headers, delivery.payload)
    except targets.TargetRefused as refused:
        error = str(refused)
    except InvalidToken:
        error = (
            "the endpoint's secret cannot be decrypted: was SECRET_KEY changed without its old value in "
            "SECRET_KEY_FALLBACKS or RETIRED_SECRET_KEYS? Create the endpoint again."
        )
    except httpx.TimeoutException:
        error = f"no answer within {TIMEOUT_SECONDS} s"
    except httpx.HTTPError as err:
        error = f"{type(err).__name__}: {err}"[:255]
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_latency_ms = round((time.perf_counter() - started) * 1000)
    delivery.last_status_code, delivery.last_response_excerpt, delivery.last_error = status_code, excerpt, error
    if status_code is not None and 200 <= status_code < 300:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.SUCCEEDED, None
        endpoint.failing_since = None
    else:
        if delivery.attempts <= len(RETRY_DELAYS):
            delivery.next_attempt_at = now + RETRY_DELAYS[delivery.attempts - 1]
        else:
            delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        endpoint.failing_since = endpoint.failing_since or now
        if now - endpoint.failing_since >= DISABLE_AFTER:
            endpoint.disabled_at = now
            log.warning("webhook endpoint %s disabled after failing since %s", endpoint.id, endpoint.failing_since)
            if on_disabled is not None:
                on_disabled(endpoint)
    # Read before the commit: the lock ends with it, and a delete that waited for it may remove the
    # row before the expired attribute would be loaded again (ObjectDeletedError).
    status = delivery.status
    try:
        db.session.commit()
    except (StaleDataError, ObjectDeletedError):
        # Only where rows are not locked (SQLite, for `make run`): the endpoint was deleted while
        # the attempt was in flight. Its log went with it; there is nothing to record.
        db.session.rollback()
        return None
    return status


def _locked_endpoint(delivery_id: str) -> WebhookEndpoint | None:
    """The delivery's endpoint, its row KEY SHARE locked until the attempt commits (None: gone).

    KEY SHARE, as deleting the endpoint (delete_endpoint locks it FOR UPDATE first) must wait for
    it, while attempts to the same endpoint, and their updates of `failing_since` (FOR NO KEY
    UPDATE), need not wait for one another. SQLite has no row locks: it takes nothing here."""
    return db.session.scalar(
        sa.select(WebhookEndpoint)
        .join(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(read=True, key_share=True, of=WebhookEndpoint)
        .execution_options(populate_existing=True)
    )


def early_until(delivery_id: str, now: datetime | None = None) -> datetime | None:
    """When a delivery that refused an attempt as not due is due, if that is only a moment away
    (EARLY_BY_AT_MOST); None otherwise (finished, leased by another attempt, gone)."""
    now = now or datetime.now(UTC)
    due_at = db.session.scalar(
        sa.select(WebhookDelivery.next_attempt_at).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING
        )
    )
    db.session.commit()
    if due_at is not None and now < due_at <= now + EARLY_BY_AT_MOST:
        return due_at
    return None


def due(now: datetime | None = None, limit: int = 500) -> list[tuple[str, datetime]]:
    """Pending deliveries and when each is due (the sweep enqueues those the scheduler lost)."""
    now = now or datetime.now(UTC)
    rows = db.session.execute(
        sa.select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    return [(r.id, r.next_attempt_at) for r in rows]


def purge(now: datetime | None = None, keep: timedelta = timedelta(days=30)) -> int:
    """Delete deliveries older than `keep` (the log's retention); how many."""
    now = now or datetime.now(UTC)
    gone = db.session.execute(sa.delete(WebhookDelivery).where(WebhookDelivery.created_at < now - keep))
    db.session.commit()
    return gone.rowcount
