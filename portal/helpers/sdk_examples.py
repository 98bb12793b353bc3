"""The SDK usage examples on /docs/sdk. Each names the sandbox operation its Run button makes.

The SDKs are generated from the spec by sdk-gen/ and fronted by a small hand-written client:
Python `from levqor.client import Levqor`, Node `import { Levqor } from "@levqor/sdk"`. With
environment "sandbox" their `jobs` and `workflows` reach /api/sandbox/v1, which is what Run calls.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class SdkExample:
    id: str
    title: str
    operation_id: str  # in portal.helpers.sandbox_calls.OPERATIONS
    python: str
    node: str


PYTHON_SETUP = """\
from levqor.client import Levqor

# The key comes from the LEVQOR_API_KEY environment variable.
client = Levqor(
    base_url="{api_base}",
    environment="sandbox",
)
"""

NODE_SETUP = """\
// example.mjs (Node 18+)
import {{ Levqor }} from "@levqor/sdk";

// The key comes from the LEVQOR_API_KEY environment variable.
const client = new Levqor({{
  baseUrl: "{api_base}",
  environment: "sandbox",
}});
"""

EXAMPLES = [
    SdkExample(
        id="submit-job",
        title="Submit a job and read its result",
        operation_id="sandbox_create_job",
        python=PYTHON_SETUP
        + """
job = client.jobs.create_job(
    {{
        "workflow": "text-stats",
        "input": {{"text": "Levqor runs workflows. Workflows run jobs.", "top": 3}},
    }}
)
print(job.id, job.status, job.result)
""",
        node=NODE_SETUP
        + """
const job = await client.jobs.createJob({{
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
for workflow in client.workflows.list_workflows().data:
    print(workflow.id, "-", workflow.description)
""",
        node=NODE_SETUP
        + """
const {{ data }} = await client.workflows.listWorkflows();
for (const workflow of data) {{
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
page = client.jobs.list_jobs(limit=5)
for job in page.data:
    print(job.id, job.workflow, job.status)
""",
        node=NODE_SETUP
        + """
const page = await client.jobs.listJobs({{ limit: 5 }});
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
