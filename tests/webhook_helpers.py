"""Shared by the webhook tests of the portal, the events and the browser: a local receiver allowed
as a target, and running the attempts the worker's task would run. The fixtures are named apart
from their functions so a test module can import them (`*_fixture`) and take them by name."""

import pytest
import sqlalchemy as sa

from levqor_core.extensions import db
from levqor_core.webhooks import dispatch
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery

from .test_webhooks import Receiver


@pytest.fixture(name="private_targets_allowed")
def private_targets_fixture(app, monkeypatch):
    """WEBHOOK_ALLOW_PRIVATE_TARGETS for this test only: the receivers listen on loopback."""
    monkeypatch.setitem(app.config, "WEBHOOK_ALLOW_PRIVATE_TARGETS", True)


@pytest.fixture(name="hook")
def hook_fixture(private_targets_allowed):
    """A receiver on loopback answering 200, allowed as a target."""
    receiver = Receiver((200,))
    yield receiver
    receiver.close()


def attempt_pending(app) -> list[str]:
    """One attempt at each pending delivery, as the worker's task runs it (the worker does not serve
    the webhooks queue in these tests); the ids attempted."""
    with app.app_context():
        pending = db.session.scalars(
            sa.select(WebhookDelivery.id).where(WebhookDelivery.status == DeliveryStatus.PENDING)
        ).all()
        for delivery_id in pending:
            dispatch.attempt(delivery_id)
        return list(pending)
