"""The spec's contract gates: the lint is clean, and `make spec-check` refuses a breaking change
without a new major version and an additive one without a new minor (openapi/check_release.py).

Each case edits a copy of the current spec in a temporary folder and compares it with the current
spec as if that were the release; Optic runs offline from node_modules."""

import copy
import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from levqor_core import spec as contract

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "openapi" / "openapi.yaml"
BIN = ROOT / "node_modules" / ".bin"
JOB_PATHS = {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/sandbox/v1/jobs"}

_spec = importlib.util.spec_from_file_location("check_release", ROOT / "openapi" / "check_release.py")
check_release = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_release)

pytestmark = pytest.mark.skipif(not (BIN / "optic").exists(), reason="npm dev dependencies not installed (make setup)")


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


@pytest.fixture(scope="module")
def job_spec(spec) -> dict:
    """The current spec's job operations, which the breaking-change cases edit. Each case is about
    what the gate says of one change, and an Optic run costs ~3 s of CPU per ten paths: the other
    paths would only add the same "no change" to every case (the whole spec is checked against the
    release in `test_current_spec_passes_spec_check_against_the_latest_release`)."""
    return contract.only_paths(spec, JOB_PATHS)


def _write(folder: Path, name: str, spec: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return path


def _bump(spec: dict, part: str) -> dict:
    major, minor, patch = check_release.version(spec["info"]["version"])
    spec["info"]["version"] = {
        "major": f"{major + 1}.0.0",
        "minor": f"{major}.{minor + 1}.0",
        "patch": f"{major}.{minor}.{patch + 1}",
    }[part]
    return spec


def _check(tmp_path: Path, released: dict, edited: dict) -> tuple[bool, str]:
    ok, lines = check_release.check(_write(tmp_path, "released.yaml", released), _write(tmp_path, "new.yaml", edited))
    return ok, "\n".join(lines)


def test_current_spec_passes_spec_check_against_the_latest_release():
    released = check_release.latest_released()
    ok, lines = check_release.check(released, SPEC_PATH)
    assert ok, lines


def test_removing_a_response_property_fails_and_names_it(tmp_path, job_spec):
    edited = copy.deepcopy(job_spec)
    job = edited["components"]["schemas"]["Job"]
    del job["properties"]["status"]
    job["required"].remove("status")
    ok, out = _check(tmp_path, job_spec, _bump(edited, "minor"))
    assert not ok
    assert "cannot remove response property 'status'" in out
    assert "GET /v1/jobs/{job_id}" in out and "new major version" in out


def test_removing_a_response_property_passes_with_a_major_bump(tmp_path, job_spec):
    edited = copy.deepcopy(job_spec)
    del edited["components"]["schemas"]["Job"]["properties"]["status"]
    edited["components"]["schemas"]["Job"]["required"].remove("status")
    ok, out = _check(tmp_path, job_spec, _bump(edited, "major"))
    assert ok, out
    assert "cannot remove response property 'status'" in out  # still named, as allowed


def test_removing_an_enum_value_fails(tmp_path, job_spec):
    edited = copy.deepcopy(job_spec)
    statuses = edited["components"]["schemas"]["JobStatus"]["enum"]
    statuses.remove("canceled")
    ok, out = _check(tmp_path, job_spec, _bump(edited, "minor"))
    assert not ok
    assert "breaking" in out and "canceled" in out


def test_a_new_required_request_field_fails(tmp_path, job_spec):
    edited = copy.deepcopy(job_spec)
    body = edited["components"]["schemas"]["JobCreate"]
    body["properties"]["priority"] = {"type": "integer"}
    body["required"].append("priority")
    ok, out = _check(tmp_path, job_spec, _bump(edited, "minor"))
    assert not ok
    assert "priority" in out and "POST /v1/jobs" in out


def _with_optional_field(spec: dict) -> dict:
    edited = copy.deepcopy(spec)
    edited["components"]["schemas"]["Job"]["properties"]["labels"] = {"type": "array", "items": {"type": "string"}}
    return edited


def test_an_optional_field_without_a_minor_bump_fails(tmp_path, job_spec):
    ok, out = _check(tmp_path, job_spec, _bump(_with_optional_field(job_spec), "patch"))
    assert not ok
    assert "new minor version" in out and "labels" in out


def test_an_optional_field_with_a_minor_bump_passes(tmp_path, job_spec):
    ok, out = _check(tmp_path, job_spec, _bump(_with_optional_field(job_spec), "minor"))
    assert ok, out


def test_a_description_change_needs_no_bump(tmp_path, job_spec):
    edited = copy.deepcopy(job_spec)
    edited["paths"]["/v1/jobs"]["get"]["description"] += " Reworded."
    ok, out = _check(tmp_path, job_spec, edited)
    assert ok, out


def test_a_lower_version_fails(tmp_path, job_spec):
    edited = copy.deepcopy(job_spec)
    edited["info"]["version"] = "0.9.0"
    ok, out = _check(tmp_path, job_spec, edited)
    assert not ok and "went down" in out


def test_docs_only_pointers_are_told_from_contract_ones():
    assert check_release._is_docs_only("/description")
    assert check_release._is_docs_only("/example/result/message")
    assert check_release._is_docs_only("/schema/properties/result/description")
    assert not check_release._is_docs_only("/schema/properties/description")  # a property named so
    assert not check_release._is_docs_only("/schema/properties/result")
    assert not check_release._is_docs_only("/links")


def _lint(tool: list[str], spec_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(tool + [str(spec_path)], capture_output=True, text=True, cwd=ROOT, timeout=300)


SPECTRAL = [str(BIN / "spectral"), "lint", "--ruleset", ".spectral.yaml", "--fail-severity", "warn", "-q"]
REDOCLY = [str(BIN / "redocly"), "lint", "--config", "redocly.yaml"]


def test_the_spec_is_clean_by_both_linters():
    for tool in (SPECTRAL, REDOCLY):
        done = _lint(tool, SPEC_PATH)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_house_rules_catch_a_bad_operation(spec):
    edited = copy.deepcopy(spec)
    jobs = edited["paths"]["/v1/jobs"]
    jobs["get"]["operationId"] = "listJobs"
    del jobs["get"]["responses"]["401"]
    del jobs["post"]["responses"]["415"]
    del jobs["post"]["responses"]["202"]["$ref"]
    jobs["post"]["responses"]["202"] = {
        "description": "Queued.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
    }
    edited["paths"]["/key"]["get"]["x-internal"] = True
    del edited["paths"]["/usage"]["get"]["x-openapi-router-controller"]
    path = SPEC_PATH.parent / "_test_bad_spec.yaml"  # beside the real one, so the ruleset's paths hold
    try:
        path.write_text(yaml.safe_dump(edited, sort_keys=False, allow_unicode=True))
        out = _lint(SPECTRAL, path).stdout
    finally:
        path.unlink(missing_ok=True)
    assert "levqor-operation-id-snake-case" in out
    assert "GET /v1/jobs lacks the shared 401 response" in out
    assert "POST /v1/jobs lacks the shared 415 response" in out
    assert "levqor-response-examples" in out
    assert "get_key accepts an API key" in out
    assert "levqor-router-controller" in out


def test_the_api_base_is_the_specs_one_server(spec):
    from levqor_core.web.api_paths import API_BASE, is_api_path

    assert spec["servers"][0]["url"] == API_BASE  # this server; the others are its public hosts
    assert all(server["url"].endswith(API_BASE) or "/api/" in server["url"] for server in spec["servers"])
    assert is_api_path("/api") and is_api_path("/api/v1/jobs")
    assert not is_api_path("/apiary") and not is_api_path("/developer")
