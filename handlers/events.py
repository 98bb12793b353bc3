"""/v1/events/trigger and /sandbox/v1/events/trigger: test events (`levqor trigger`)."""

from levqor_core.webhooks import test_events

from . import _caller
from ._reply import Reply, ok


def trigger_event(*, body: dict, sandbox: bool = False) -> Reply:
    """Emit a test event of this type through the path real events take."""
    return ok(test_events.trigger(_caller.account(), body["type"], sandbox=sandbox), 202)


def sandbox_trigger_event(*, body: dict) -> Reply:
    """Emit a sandbox test event."""
    return trigger_event(body=body, sandbox=True)
