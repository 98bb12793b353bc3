"""Shared by the webhook tests of the portal, the events and the browser: a local receiver allowed
as a target, and running the attempts the worker's task would run. The fixtures are named apart
from their functions so a test module can import them (`*_fixture`) and take them by name."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from levqor_core.extensions import db
from levqor_core.webhooks import dispatch
from levqor_core.webhooks.models import DeliveryStatus, WebhookDelivery


class Receiver:
    """A developer's endpoint on loopback: answers each POST with the next planned status."""

    def __init__(self, statuses=(200,)):
        self.planned = list(statuses)
        self.received: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(
                    {
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode(),
                        "path": self.path,
                    }
                )
                status = receiver.planned.pop(0) if len(receiver.planned) > 1 else receiver.planned[0]
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"x" * 2000 if status >= 500 else b"thanks")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/hooks?source=levqor"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


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
