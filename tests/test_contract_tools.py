"""The served spec as a contract that tools nobody here wrote run unmodified, against the app served
for real (uvicorn on loopback): Dredd (every 2xx transaction), schemathesis (`--checks all`, all
phases, two accounts) and newman (the Postman collection /api/postman.json serves).

How to run each by hand, and what to do when one fails after a spec change:
docs/contributing/api-contract-tools.md.
"""

import importlib.util
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from levqor_core import postman
from levqor_core import spec as contract

from .servers import served_in_thread

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "node_modules" / ".bin"
HOOKS = ROOT / "tests" / "contract" / "dredd_hooks.js"
# example.com, the webhook example's host, resolves to public addresses on the Internet; this
# machine has no DNS, so the app's SSRF guard is given the answer the Internet gives.
EXAMPLE_COM = "93.184.215.14"

pytestmark = pytest.mark.skipif(
    not all((BIN / tool).exists() for tool in ("dredd", "newman", "openapi2postmanv2")),
    reason="npm dev dependencies not installed (make setup)",
)


@pytest.fixture
def public_dns(monkeypatch):
    """example.com resolves as it does on the Internet; every other name as the system says."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "example.com":
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (EXAMPLE_COM, int(port or 443)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
def live(cx, public_dns):
    """The app on a real uvicorn server; its base URL."""
    with served_in_thread(cx) as port:
        yield f"http://127.0.0.1:{port}"


def _run(cmd: list[str], env: dict | None = None, timeout: float = 240, cwd: Path = ROOT):
    return subprocess.run(
        cmd, cwd=cwd, env=os.environ | (env or {}), capture_output=True, text=True, timeout=timeout, check=False
    )


# -- Dredd ----------------------------------------------------------------------------------------------


def _served_spec(live: str, folder: Path) -> Path:
    """/api/openapi.json as served, in a file. (Dredd given the URL parses the spec for longer than
    uvicorn keeps the idle connection it fetched it on, and its first request meets a closed socket.)"""
    path = folder / "openapi.json"
    path.write_bytes(httpx.get(f"{live}/api/openapi.json").raise_for_status().content)
    return path


# The Server-Sent Event streams answer until the client leaves: the tools would wait on them (the
# hooks skip them; tests/test_streams.py and tests/test_cli.py hold them to the spec).
STREAMS = ("stream_events", "sandbox_stream_events", "stream_request_log")


def _successes(spec: dict) -> int:
    """How many (operation, 2xx response) pairs the spec has: Dredd's transactions to pass."""
    return sum(
        1
        for item in spec["paths"].values()
        for operation in item.values()
        if isinstance(operation, dict) and "responses" in operation and operation.get("operationId") not in STREAMS
        for code in operation["responses"]
        if str(code).startswith("2")
    )


def test_dredd_runs_the_served_spec_and_every_2xx_transaction_passes(live, make_account, tmp_path):
    _, key = make_account(tier="pro")
    served = _served_spec(live, tmp_path)
    done = _run(
        [
            str(BIN / "dredd"),
            str(served),
            f"{live}/api",
            f"--hookfiles={HOOKS}",
            "--loglevel=warning",
            "--color=false",
        ],
        env={"LEVQOR_API_KEY": key, "NO_COLOR": "1"},
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    summary = re.search(r"complete: (\d+) passing, (\d+) failing, (\d+) errors, (\d+) skipped, (\d+) total", out)
    assert summary, out[-4000:]
    passing, failing, errors, skipped, total = map(int, summary.groups())
    failures = "\n".join(line for line in out.splitlines() if line.startswith(("fail:", "error:")))
    assert (failing, errors) == (0, 0) and done.returncode == 0, failures or out[-6000:]
    # Every success the spec promises was called and passed (0 tests ran before 1.2.0); the
    # hooks skip only the error responses, which schemathesis provokes below.
    assert passing == _successes(json.loads(served.read_text())) > 25, summary.group(0)
    print(summary.group(0))


# -- Postman (newman) ------------------------------------------------------------------------------------


def _postman_builder():
    """openapi/postman.py (a script), loaded as a module."""
    loader = importlib.util.spec_from_file_location("postman_build", ROOT / "openapi" / "postman.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _newman(collection: Path, live: str, key: str, folder: Path, *extra: str) -> dict:
    """newman's run of `collection` against the app: its JSON report's `run`."""
    report = folder / f"newman-{len(list(folder.glob('newman-*')))}.json"
    done = _run(
        [
            str(BIN / "newman"),
            "run",
            str(collection),
            "--env-var",
            f"baseUrl={live}/api",
            "--env-var",
            f"apiKey={key}",
            # A free account's burst limit is 10 calls a second: what a developer trying it has.
            "--delay-request",
            "110",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--color",
            "off",
            "--disable-unicode",
            *extra,
        ]
    )
    assert report.exists(), done.stdout[-4000:] + done.stderr[-4000:]
    run = json.loads(report.read_text())["run"]
    run["output"] = done.stdout
    return run


def _requests_in(collection: dict) -> list[dict]:
    found = []
    for item in collection["item"]:
        found.extend(_requests_in(item) if "item" in item else [item])
    return found


def _without_ids(node):
    """A collection without the random ids the converter gives each item and response."""
    if isinstance(node, dict):
        return {k: _without_ids(v) for k, v in node.items() if k not in ("id", "_postman_id")}
    if isinstance(node, list):
        return [_without_ids(v) for v in node]
    return node


def test_newman_runs_the_served_collection_with_a_real_key_and_no_failures(live, make_account, tmp_path):
    _, key = make_account(tier="sandbox")
    collection = tmp_path / "levqor.postman_collection.json"
    collection.write_bytes(httpx.get(f"{live}/api/postman.json").raise_for_status().content)
    requests = _requests_in(json.loads(collection.read_text()))

    run = _newman(collection, live, key, tmp_path)
    stats = run["stats"]
    assert stats["requests"]["failed"] == 0 and stats["assertions"]["failed"] == 0, run["output"][-6000:]
    # Every request ran and checked its status, but the key's revocation, which asks first.
    assert stats["requests"]["total"] == len(requests) - 1, run["output"][-3000:]
    assert stats["assertions"]["total"] == len(requests) - 1
    assert httpx.get(f"{live}/api/key", headers={"x-api-key": key}).status_code == 200

    # Asked to (revokeKey=yes), the run revokes the key, last: every other request still passed.
    run = _newman(collection, live, key, tmp_path, "--env-var", "revokeKey=yes")
    assert run["stats"]["assertions"]["failed"] == 0, run["output"][-6000:]
    assert run["stats"]["requests"]["total"] == len(requests)
    assert run["executions"][-1]["item"]["name"] == "Revoke the active key"
    assert httpx.get(f"{live}/api/key", headers={"x-api-key": key}).status_code == 401


def test_the_served_collection_is_the_one_the_current_spec_builds(live, tmp_path):
    """/api/postman.json is what `make setup` built from this spec (a stale build fails here)."""
    served = httpx.get(f"{live}/api/postman.json").raise_for_status().json()
    built = _postman_builder().build(out=tmp_path / "built.json")
    fresh = json.loads(built.read_text())
    for collection in (served, fresh):
        collection["variable"] = [v for v in collection["variable"] if v["key"] != "baseUrl"]
    assert _without_ids(served) == _without_ids(fresh), "stale build/postman: run `make postman`"


def test_a_spec_whose_success_status_is_wrong_fails_the_collection(live, make_account, tmp_path):
    """The status tests bite: a spec promising 201 for a job's creation makes that request fail."""
    builder = _postman_builder()
    spec = contract.public(builder.without_streams(contract.load()))  # as openapi/postman.py builds it
    responses = spec["paths"]["/v1/jobs"]["post"]["responses"]
    responses["201"] = responses.pop("202")
    spec["paths"]["/v1/jobs"]["post"]["responses"] = {"201": responses.pop("201"), **responses}
    collection = tmp_path / "wrong.json"
    collection.write_text(json.dumps(postman.finish(builder.convert(spec), spec)))
    _, key = make_account(tier="sandbox")
    run = _newman(collection, live, key, tmp_path)
    failed = [f["source"]["name"] for f in run["failures"]]
    assert failed == ["Submit a job"], run["output"][-4000:]


# -- schemathesis --------------------------------------------------------------------------------------

SCHEMATHESIS_SECONDS = 45


def test_schemathesis_all_checks_all_phases_two_accounts(live, make_account, tmp_path):
    """schemathesis' CLI as an outsider runs it: every check, the four phases, two accounts (its
    object-level authorisation check reads one account's objects as the other), bounded in time."""
    keys = [make_account(tier="enterprise")[1] for _ in range(2)]
    auth = tmp_path / "accounts.json"
    auth.write_text(
        json.dumps(
            {
                "auth": [
                    {"name": name, "fixedHeaders": [{"name": "x-api-key", "value": key}]}
                    for name, key in zip(("alice", "bob"), keys, strict=True)
                ]
            }
        )
    )
    done = _run(
        [
            str(ROOT / ".venv" / "bin" / "schemathesis"),
            "--config-file",
            str(ROOT / "tests" / "contract" / "schemathesis.toml"),
            "run",
            f"{live}/api/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--auth-wfc",
            str(auth),
            # Revoking the key would end the run's identity halfway (test_fuzz fuzzes it from a
            # portal session, on a key of its own).
            "--exclude-operation-id",
            "revoke_key",
            *(arg for stream in STREAMS for arg in ("--exclude-operation-id", stream)),
            "--max-time",
            str(SCHEMATHESIS_SECONDS),
            "--seed",
            "25",
            # One worker: with two, Hypothesis' lambda descriptions (ast.parse) raced on Python 3.11
            # ("AST constructor recursion depth mismatch"), a schemathesis run error.
            "--workers",
            "1",
            "--no-color",
        ],
        timeout=SCHEMATHESIS_SECONDS + 120,
        # Its cache (.schemathesis/: crashes it replays first) stays out of the repository, and
        # each run starts without the last one's.
        cwd=tmp_path,
    )
    out = done.stdout
    failures = out[out.find("=== FAILURES") : out.find("=== SUMMARY")] if "=== FAILURES" in out else ""
    assert done.returncode == 0, (failures or out)[-8000:]
    assert re.search(r"Test cases:\n\s+\d+ generated", out), out[-3000:]  # it ran, and said how much
