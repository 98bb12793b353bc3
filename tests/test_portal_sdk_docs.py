"""What /docs/sdk tells developers works as written: the install commands fetch the SDKs from
where `make sdk-publish` puts them, and the examples run against the generated SDKs and a live app.

The slow tests are marked `sdk` like tests/test_sdk.py, and share its fixtures (tests/sdk_build.py:
generation, a fresh virtualenv, a packed Node SDK, the app on uvicorn) and its xdist group
(tests/xdist_groups.py).
"""

import html
import json
import os
import re
import subprocess
import tomllib
import venv

import pytest
import yaml

from portal.helpers import sdk_examples
from portal.views.docs import SDK_REPOSITORY

from .sdk_build import PUBLISH, ROOT, run

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


def _code(page: str, code_id: str) -> str:
    """The text of a copyable code block, as the Copy button puts it on the clipboard."""
    return html.unescape(re.search(rf'<code id="{code_id}">(.*?)</code>', page, re.S).group(1))


def _install_commands(page: str) -> dict:
    return {"pip": _code(page, "pip-install"), "npm": _code(page, "npm-install")}


def test_sdk_page_installs_from_the_sdk_repository_at_the_running_version(client, app):
    page = client.get("/docs/sdk").text
    version = app.config["API_VERSION"]
    commands = _install_commands(page)
    # Not `pip install levqor` / `npm install @levqor/sdk`: neither package is on PyPI or npm.
    assert commands["pip"] == f'pip install "git+{SDK_REPOSITORY}@v{version}#subdirectory=python"'
    assert commands["npm"].splitlines() == [
        f"git clone --depth 1 --branch v{version} {SDK_REPOSITORY}",
        "(cd levqor-sdk/node && npm install --ignore-scripts && npm pack --pack-destination ../..)",
        f"npm install ./levqor-sdk-{version}.tgz",
    ]
    assert "Python 3.10+" in page and "Python 3.9" not in page and "Node 18+" in page


def test_sdk_repository_on_the_page_is_the_one_the_generated_packages_name():
    python = yaml.safe_load((ROOT / "sdk-gen" / "python" / "config.yaml").read_text())
    node = yaml.safe_load((ROOT / "sdk-gen" / "node" / "config.yaml").read_text())
    assert python["packageUrl"] == SDK_REPOSITORY
    assert f"https://github.com/{node['gitUserId']}/{node['gitRepoId']}" == SDK_REPOSITORY


def _shell(script: str, cwd, env) -> None:
    proc = subprocess.run(["bash", "-ec", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.sdk
def test_sdk_page_install_commands_work_from_the_published_repository(client, generated, tmp_path):
    out = generated[0]
    remote = tmp_path / "levqor-sdk.git"
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(remote)])
    run([*PUBLISH, "--source", str(out)], env={**os.environ, "LEVQOR_SDK_REMOTE": str(remote)})
    page = client.get("/docs/sdk").text
    # The page's commands exactly, with the public repository swapped for the local copy.
    commands = {k: v.replace(SDK_REPOSITORY, remote.as_uri()) for k, v in _install_commands(page).items()}
    # The minimums the page states are the ones the packages declare.
    requires = tomllib.loads((out / "python" / "pyproject.toml").read_text())["project"]["requires-python"]
    engines = json.loads((out / "node" / "package.json").read_text())["engines"]["node"]
    assert (requires, engines) == (">=3.10", ">=18")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    _shell(commands["pip"], tmp_path, env)
    _shell("python -c 'from levqor.client import Levqor; Levqor(api_key=\"k\")'", tmp_path, env)

    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "sdk-consumer", "private": True}))
    npm_env = {**os.environ, "npm_config_prefer_offline": "true"}  # TypeScript from the npm cache
    _shell(commands["npm"], project, npm_env)
    _shell("node -e \"new (require('@levqor/sdk').Levqor)({ apiKey: 'k' })\"", project, npm_env)
    _shell(
        "node --input-type=module -e \"import { Levqor } from '@levqor/sdk'; new Levqor({ apiKey: 'k' })\"",
        project,
        npm_env,
    )


@pytest.mark.sdk
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


def test_sdk_page_says_how_to_build_the_packages_when_none_is_built(client, app, monkeypatch, tmp_path):
    monkeypatch.setitem(app.config, "SDK_BUILD_DIR", tmp_path)  # nothing generated there
    page = client.get("/docs/sdk").text
    assert 'id="sdk-not-built"' in page and "make sdk" in page and 'id="pip-install-here"' not in page
    version = app.config["API_VERSION"]
    assert client.get(f"/sdk/python/levqor-{version}.tar.gz").status_code == 404


@pytest.mark.sdk
def test_sdk_page_install_commands_install_from_this_server_after_make_sdk(
    app, cx, generated, live_url, monkeypatch, tmp_path
):
    """`make sdk`'s output served by the app: the page's pip and npm commands, run as shown in a fresh
    virtualenv and an empty Node project (the public base URL swapped for the live server's)."""
    monkeypatch.setitem(app.config, "SDK_BUILD_DIR", generated[0])
    page = cx.test_client().get("/docs/sdk").text
    server = live_url.removesuffix("/api")
    pip = _code(page, "pip-install-here").replace(app.config["PUBLIC_BASE_URL"], server)
    npm = _code(page, "npm-install-here").replace(app.config["PUBLIC_BASE_URL"], server)
    version = app.config["API_VERSION"]
    assert pip == f'pip install "{server}/sdk/python/levqor-{version}.tar.gz"'
    assert npm == f"npm install {server}/sdk/node/levqor-sdk-{version}.tgz"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    env = {**os.environ, "PATH": f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    _shell(pip, tmp_path, env)
    _shell("python -c 'from levqor.client import Levqor; Levqor(api_key=\"k\")'", tmp_path, env)

    project = tmp_path / "project"
    project.mkdir()
    (project / "package.json").write_text(json.dumps({"name": "sdk-consumer", "private": True}))
    npm_env = {**os.environ, "npm_config_prefer_offline": "true"}
    _shell(npm, project, npm_env)
    _shell("node -e \"new (require('@levqor/sdk').Levqor)({ apiKey: 'k' })\"", project, npm_env)
