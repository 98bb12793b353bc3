"""/v1/workflows"""

from levqor_core import problems
from levqor_core.apijobs import workflows

from ._reply import ok


def list_workflows():
    return ok({"data": [w.to_dict() for w in workflows.CATALOGUE.values()]})


def get_workflow(workflow_id):
    workflow = workflows.get(workflow_id)
    if workflow is None:
        raise problems.NotFound(f"No workflow {workflow_id!r}.")
    return ok(workflow.to_dict())
