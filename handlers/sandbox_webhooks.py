"""/sandbox/v1/webhook_endpoints: the same endpoints, receiving the sandbox's events."""

from . import webhooks


def sandbox_create_webhook_endpoint(body):
    return webhooks.create_webhook_endpoint(body, sandbox=True)


def sandbox_list_webhook_endpoints():
    return webhooks.list_webhook_endpoints(sandbox=True)


def sandbox_get_webhook_endpoint(endpoint_id):
    return webhooks.get_webhook_endpoint(endpoint_id, sandbox=True)


def sandbox_delete_webhook_endpoint(endpoint_id):
    return webhooks.delete_webhook_endpoint(endpoint_id, sandbox=True)


def sandbox_test_webhook_endpoint(endpoint_id):
    return webhooks.test_webhook_endpoint(endpoint_id, sandbox=True)
