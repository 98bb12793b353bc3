"""/sandbox/v1/webhook_endpoints: the same endpoints, receiving the sandbox's events."""

from . import webhooks
from ._reply import Reply


def sandbox_create_webhook_endpoint(*, body: dict) -> Reply:
    """Register a sandbox webhook endpoint."""
    return webhooks.create_webhook_endpoint(body=body, sandbox=True)


def sandbox_list_webhook_endpoints() -> Reply:
    """The caller's sandbox webhook endpoints."""
    return webhooks.list_webhook_endpoints(sandbox=True)


def sandbox_get_webhook_endpoint(*, endpoint_id: str) -> Reply:
    """One sandbox webhook endpoint."""
    return webhooks.get_webhook_endpoint(endpoint_id=endpoint_id, sandbox=True)


def sandbox_delete_webhook_endpoint(*, endpoint_id: str) -> Reply:
    """Delete a sandbox webhook endpoint."""
    return webhooks.delete_webhook_endpoint(endpoint_id=endpoint_id, sandbox=True)


def sandbox_test_webhook_endpoint(*, endpoint_id: str) -> Reply:
    """Send a sandbox endpoint a test event."""
    return webhooks.test_webhook_endpoint(endpoint_id=endpoint_id, sandbox=True)
