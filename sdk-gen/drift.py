"""Checks that the generated SDKs expose exactly the spec's operations, under the expected names.

Each operation not marked `x-internal` must be a method named after its operationId (snake_case in Python, camelCase in
Node) on the class named after its tag (`Jobs` → `JobsApi`), with nothing missing or left over.
generate.py runs it after every generation and tests/test_sdk.py runs it in the suite.
"""

import re
from pathlib import Path

import yaml

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Operations the hand-written layers extend (Idempotency-Key, pagination): renaming one in the
# spec must fail here, not at a customer's runtime.
LAYER_USES = {"JobsApi": {"create_job", "list_jobs"}, "SandboxApi": {"sandbox_create_job", "sandbox_list_jobs"}}


def spec_operations(spec_path: Path) -> dict[str, set[str]]:
    """{class name: {operationId}} from the spec."""
    spec = yaml.safe_load(Path(spec_path).read_text())
    found: dict[str, set[str]] = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            # x-internal operations (portal-only, webhooks) are left out by openapi-generator.
            if operation is None or operation.get("x-internal"):
                continue
            if "operationId" not in operation:
                raise ValueError(f"{method.upper()} {path} has no operationId")
            tag = (operation.get("tags") or ["Default"])[0]
            found.setdefault(f"{tag[0].upper()}{tag[1:]}Api", set()).add(operation["operationId"])
    return found


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def python_operations(package_dir: Path) -> dict[str, set[str]]:
    """{class: {method}} for the generated Python API classes (helper variants left out)."""
    found: dict[str, set[str]] = {}
    for module in sorted((Path(package_dir) / "api").glob("*_api.py")):
        text = module.read_text()
        cls = re.search(r"^class (\w+)\b", text, re.M).group(1)
        names = set(re.findall(r"^    def ([a-z]\w*)\(", text, re.M))
        found[cls] = {n for n in names if not n.endswith(("_with_http_info", "_without_preload_content"))}
    return found


def node_operations(src_dir: Path) -> dict[str, set[str]]:
    """{class: {method}} for the generated TypeScript API classes (Raw and RequestOpts left out)."""
    found: dict[str, set[str]] = {}
    for module in sorted((Path(src_dir) / "apis").glob("*Api.ts")):
        text = module.read_text()
        cls = re.search(r"^export class (\w+) extends runtime\.BaseAPI", text, re.M).group(1)
        names = set(re.findall(r"^    async (\w+)\(", text, re.M))
        found[cls] = {n for n in names if not n.endswith(("Raw", "RequestOpts"))}
    return found


def _compare(lang: str, expected: dict[str, set[str]], actual: dict[str, set[str]]) -> list[str]:
    problems = []
    for cls in sorted(expected.keys() | actual.keys()):
        want, have = expected.get(cls, set()), actual.get(cls, set())
        problems += [f"{lang}: {cls}.{name} is in the spec but not in the SDK" for name in sorted(want - have)]
        problems += [f"{lang}: {cls}.{name} is in the SDK but not in the spec" for name in sorted(have - want)]
    return problems


def drift(spec_path: Path, out_dir: Path) -> list[str]:
    """Every disagreement between the spec and the SDKs generated in out_dir; [] when in step."""
    spec = spec_operations(spec_path)
    out_dir = Path(out_dir)
    problems = [
        f"hand-written layer: {cls}.{name} is used by sdk-gen but not in the spec"
        for cls, names in LAYER_USES.items()
        for name in sorted(names - spec.get(cls, set()))
    ]
    if (out_dir / "python").exists():
        problems += _compare("python", spec, python_operations(out_dir / "python" / "levqor"))
    if (out_dir / "node").exists():
        expected = {cls: {camel(op) for op in ops} for cls, ops in spec.items()}
        problems += _compare("node", expected, node_operations(out_dir / "node" / "src"))
    return problems
