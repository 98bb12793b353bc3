"""Verifying Levqor's webhook deliveries in your receiver (hand-written; copied into the package).

Levqor signs every delivery per Standard Webhooks; this checks the signature and the timestamp
(5 minutes' tolerance) with the `standardwebhooks` library and returns the event:

    from levqor.webhooks import verify_webhook, WebhookSignatureError

    def receive(request):  # your framework's request
        try:
            event = verify_webhook(request.body, request.headers, secret=os.environ["LEVQOR_WEBHOOK_SECRET"])
        except WebhookSignatureError:
            return 400
        if event["type"] == "job.succeeded":
            ...
        return 204  # any 2xx within 10 s; the same webhook-id may arrive twice: deduplicate on it

Pass the body exactly as received (bytes), before any JSON parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .errors import LevqorError


class WebhookSignatureError(LevqorError):
    """The delivery is not signed with this secret, or its timestamp is too old or too new."""


def verify_webhook(payload: bytes | str, headers: Mapping[str, str], secret: str) -> dict[str, Any]:
    """The verified event (`{"type", "timestamp", "data"}`), or WebhookSignatureError."""
    try:
        return Webhook(secret).verify(payload, dict(headers.items()))
    except WebhookVerificationError as err:
        raise WebhookSignatureError(str(err)) from err
