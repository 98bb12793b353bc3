"""The SDK usage examples on /docs/sdk. Each names the sandbox operation its Run button makes.

The SDKs are generated from the spec by sdk-gen/ (openapi-generator: `python` and
`typescript-fetch`), so class and method names follow the spec's tags and operationIds.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class SdkExample:
    id: str
    title: str
    operation_id: str  # in levqor.portal_sandbox.OPERATIONS
    python: str
    node: str


PYTHON_SETUP = """\
import os

import levqor

configuration = levqor.Configuration(host="{api_base}")
configuration.api_key["ApiKeyAuth"] = os.environ["LEVQOR_API_KEY"]
"""

NODE_SETUP = """\
import {{ Configuration, SandboxApi }} from "@levqor/sdk";

const configuration = new Configuration({{
  basePath: "{api_base}",
  apiKey: process.env.LEVQOR_API_KEY,
}});
const sandbox = new SandboxApi(configuration);
"""

EXAMPLES = [
    SdkExample(
        id="submit-job",
        title="Submit a job and read its result",
        operation_id="sandbox_create_job",
        python=PYTHON_SETUP
        + """
with levqor.ApiClient(configuration) as client:
    sandbox = levqor.SandboxApi(client)
    job = sandbox.sandbox_create_job(
        levqor.JobCreate(
            workflow="text-stats",
            input={{"text": "Levqor runs workflows. Workflows run jobs.", "top": 3}},
        )
    )
    print(job.id, job.status, job.result)
""",
        node=NODE_SETUP
        + """
const job = await sandbox.sandboxCreateJob({{
  jobCreate: {{
    workflow: "text-stats",
    input: {{ text: "Levqor runs workflows. Workflows run jobs.", top: 3 }},
  }},
}});
console.log(job.id, job.status, job.result);
""",
    ),
    SdkExample(
        id="list-workflows",
        title="List the workflows a job can run",
        operation_id="sandbox_list_workflows",
        python=PYTHON_SETUP
        + """
with levqor.ApiClient(configuration) as client:
    workflows = levqor.SandboxApi(client).sandbox_list_workflows()
    for workflow in workflows.data:
        print(workflow.id, "-", workflow.description)
""",
        node=NODE_SETUP
        + """
const workflows = await sandbox.sandboxListWorkflows();
for (const workflow of workflows.data) {{
  console.log(workflow.id, "-", workflow.description);
}}
""",
    ),
    SdkExample(
        id="list-jobs",
        title="List your recent jobs",
        operation_id="sandbox_list_jobs",
        python=PYTHON_SETUP
        + """
with levqor.ApiClient(configuration) as client:
    page = levqor.SandboxApi(client).sandbox_list_jobs(limit=5)
    for job in page.data:
        print(job.id, job.workflow, job.status)
""",
        node=NODE_SETUP
        + """
const page = await sandbox.sandboxListJobs({{ limit: 5 }});
for (const job of page.data) {{
  console.log(job.id, job.workflow, job.status);
}}
""",
    ),
]

BY_ID = {e.id: e for e in EXAMPLES}


def rendered(api_base: str) -> list[dict]:
    return [
        {"example": e, "python": e.python.format(api_base=api_base), "node": e.node.format(api_base=api_base)}
        for e in EXAMPLES
    ]
