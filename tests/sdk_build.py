"""The generated SDKs, built once per test process for every test marked `sdk` (tests/test_sdk.py,
tests/test_portal_sdk_docs.py): generation, a fresh virtualenv with the Python SDK, a Node project
with the packed Node SDK, the app on a real server. Registered in tests/conftest.py; the tests that
use them share the `sdk` xdist group (tests/xdist_groups.py): under `make test` one worker builds
them, once."""

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from .servers import served_in_thread

ROOT = Path(__file__).resolve().parent.parent
GENERATE = [sys.executable, str(ROOT / "sdk-gen" / "generate.py")]
PUBLISH = [sys.executable, str(ROOT / "sdk-gen" / "publish.py")]
HERE = Path(__file__).resolve().parent / "sdk"


def run(cmd, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd} → {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="session")
def generated(tmp_path_factory):
    """`make sdk`'s script into a temporary folder (build/sdk is left alone)."""
    out = tmp_path_factory.mktemp("sdk")
    proc = run([*GENERATE, "--out", str(out)], cwd=ROOT)
    return out, proc.stdout


@pytest.fixture(scope="session")
def live_url(cx):
    """The app served for real by uvicorn on a free port (a thread in this process)."""
    with served_in_thread(cx) as port:
        yield f"http://127.0.0.1:{port}/api"


@pytest.fixture(scope="session")
def python_sdk(generated, tmp_path_factory) -> Path:
    """A fresh virtualenv with only the generated Python SDK (and its dependencies) installed."""
    out = generated[0]
    env_dir = tmp_path_factory.mktemp("py-sdk") / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(out / "python")])
    return python


@pytest.fixture(scope="session")
def node_project(generated, tmp_path_factory) -> Path:
    """A throwaway Node project with the packed SDK installed from its tarball, as a user would."""
    out = generated[0]
    project = tmp_path_factory.mktemp("node-sdk")
    packed = run(
        ["npm", "pack", "--ignore-scripts", "--json", "--pack-destination", str(project)], cwd=out / "node"
    ).stdout
    tarball = project / json.loads(packed)[0]["filename"]
    (project / "package.json").write_text(json.dumps({"name": "sdk-consumer", "private": True}))
    # --prefer-offline: the SDK depends on standardwebhooks, which a fresh machine has not cached yet.
    run(["npm", "install", "--prefer-offline", "--no-audit", "--no-fund", str(tarball)], cwd=project)
    shutil.copy(HERE / "node_scenario.cjs", project)
    return project
