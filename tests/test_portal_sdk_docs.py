"""The SDK examples /docs/sdk shows run as written against the generated SDKs and a live app.

Marked `sdk` like tests/test_sdk.py, whose fixtures (generation, a fresh virtualenv, a packed
Node SDK, the app on uvicorn) it reuses.
"""

import os
import re
import subprocess

import pytest

from portal import sdk_examples

from . import test_sdk

# Its module-scoped fixtures, made visible here.
generated, live_url, node_project, python_sdk = (
    test_sdk.generated,
    test_sdk.live_url,
    test_sdk.node_project,
    test_sdk.python_sdk,
)

pytestmark = pytest.mark.sdk

EXPECTED = {
    "submit-job": re.compile(
        r"^job_[0-9a-f]{20} (JobStatus\.)?(SUCCEEDED|succeeded) .*'?words'?: 6", re.M | re.I | re.S
    ),
    "list-workflows": re.compile(r"^text-stats - ", re.M),
    "list-jobs": re.compile(r"^job_[0-9a-f]{20} text-stats ", re.M),
}


def _run(cmd, cwd, key):
    env = {**os.environ, "LEVQOR_API_KEY": key}
    env.pop("LEVQOR_BASE_URL", None)  # the examples name the host themselves
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("language", ["python", "node"])
def test_every_sdk_example_on_the_docs_page_runs_as_shown(
    language, python_sdk, node_project, live_url, make_account, tmp_path
):
    _, key = make_account()
    # Same order as the page: the job submitted first is listed last.
    for item in sdk_examples.rendered(live_url):
        example = item["example"]
        if language == "python":
            script = tmp_path / f"{example.id}.py"
            script.write_text(item["python"])
            out = _run([str(python_sdk), str(script)], tmp_path, key)
        else:
            script = node_project / f"{example.id}.mjs"
            script.write_text(item["node"])
            out = _run(["node", str(script)], node_project, key)
        assert EXPECTED[example.id].search(out), f"{example.id} ({language}) printed:\n{out}"
