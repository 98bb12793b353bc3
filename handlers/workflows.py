"""/v1/workflows"""

from levqor_core.apijobs import workflows

from ._reply import ok


def list_workflows():
    return ok(workflows.listing())


def get_workflow(workflow_id):
    return ok(workflows.read(workflow_id))
