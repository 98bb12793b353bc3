"""/v1/workflows"""

from levqor_core.apijobs import workflows

from ._reply import Reply, ok


def list_workflows() -> Reply:
    """The workflow catalogue."""
    return ok(workflows.listing())


def get_workflow(*, workflow_id: str) -> Reply:
    """One workflow with its input schema."""
    return ok(workflows.read(workflow_id))
