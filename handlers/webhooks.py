"""/v1/webhook_endpoints (and, with sandbox=True, their /sandbox/v1 twins in sandbox_webhooks)."""

from flask import current_app

from levqor_core.webhooks import service as webhooks

from . import _caller
from ._reply import Reply, ok


def create_webhook_endpoint(*, body: dict, sandbox: bool = False) -> Reply:
    """Register a webhook endpoint; its signing secret is in this answer only."""
    endpoint, secret = webhooks.create_endpoint(
        _caller.account(),
        body["url"],
        body["events"],
        sandbox=sandbox,
        secret_key=current_app.config["SECRET_KEY"],
        allow_private=current_app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"],
    )
    prefix = "/api/sandbox/v1" if sandbox else "/api/v1"
    headers = {"Cache-Control": "no-store", "Location": f"{prefix}/webhook_endpoints/{endpoint.id}"}
    return ok(endpoint.to_dict() | {"secret": secret}, 201, headers)


def list_webhook_endpoints(*, sandbox: bool = False) -> Reply:
    """The caller's webhook endpoints."""
    return ok({"data": [e.to_dict() for e in webhooks.endpoints_of(_caller.account_id(), sandbox)]})


def get_webhook_endpoint(*, endpoint_id: str, sandbox: bool = False) -> Reply:
    """One webhook endpoint."""
    return ok(webhooks.owned(_caller.account_id(), endpoint_id, sandbox).to_dict())


def delete_webhook_endpoint(*, endpoint_id: str, sandbox: bool = False) -> Reply:
    """Delete a webhook endpoint; no attempt reaches it afterwards."""
    webhooks.delete_endpoint(webhooks.owned(_caller.account_id(), endpoint_id, sandbox))
    return None, 204, {}


def test_webhook_endpoint(*, endpoint_id: str, sandbox: bool = False) -> Reply:
    """Send the endpoint a test event."""
    return ok(webhooks.send_test(webhooks.owned(_caller.account_id(), endpoint_id, sandbox)).to_dict(), 202)
