"""The layout's promises: domain modules load no web framework, nothing imports in a circle, and
the core never reaches into the handlers, the portal or the worker."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("levqor_core", "handlers", "portal", "jobs")
DOMAINS = ("accounts", "apijobs", "billing", "keys", "limits", "metering", "ops")
WEB_FRAMEWORKS = ("connexion", "starlette", "flask_limiter")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules `name` imports at module level or inside functions (a lazy import still
    ties the two modules together)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    for name in graph:
        # A package's modules reading its own __init__ (the blueprint idiom) is not a cycle.
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_projects_modules():
    assert _cycles(_graph()) == []


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between the core's packages (levqor_core.<package>): a cycle between two
    domains is one even when no single module pair closes it."""

    def package(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if parts[0] == "levqor_core" and len(parts) > 2 else None

    packages: dict[str, set[str]] = defaultdict(set)
    for name, targets in graph.items():
        if source := package(name):
            packages[source] |= {p for t in targets if (p := package(t)) and p != source}
    return packages


def test_no_import_cycle_among_the_cores_packages():
    assert _cycles(_package_graph(_graph())) == []


def test_the_package_graph_sees_a_cycle_closed_by_different_modules():
    graph = {"levqor_core.a.x": {"levqor_core.b.y"}, "levqor_core.b.z": {"levqor_core.a.w"}}
    assert _cycles(_package_graph(graph)) == [["a", "b"]]


def test_the_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_no_handler_view_or_worker_module():
    offenders = defaultdict(set)
    for name, targets in _graph().items():
        if name.startswith("levqor_core"):
            for target in targets:
                if target.split(".")[0] in ("handlers", "portal", "jobs"):
                    offenders[name].add(target)
    assert dict(offenders) == {}


def _loaded_after_import(module: str) -> set[str]:
    probe = f"import sys, {module}\nprint('\\n'.join(sorted({{m.split('.')[0] for m in sys.modules}})))\n"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_the_tier_table_loads_no_web_framework_in_a_fresh_interpreter():
    loaded = _loaded_after_import("levqor_core.tiers")
    assert "levqor_core" in loaded  # the probe did import it
    assert loaded.isdisjoint(WEB_FRAMEWORKS), loaded & set(WEB_FRAMEWORKS)


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_domain_module_loads_a_web_framework(domain):
    modules = sorted(
        _module_name(path) for path in (ROOT / "levqor_core" / domain).rglob("*.py") if "__pycache__" not in path.parts
    )
    loaded = _loaded_after_import(", ".join(modules))
    assert loaded.isdisjoint(WEB_FRAMEWORKS), (domain, loaded & set(WEB_FRAMEWORKS))


def _shadowing_levqor(checkout: Path) -> str | None:
    """Where `import levqor` run from `checkout` would load a module of that checkout (None when it
    finds the SDK or nothing). Only the installed SDK (in the virtualenv) or the generated one
    (under sdk-gen/) may answer to the name."""
    out = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; s = u.find_spec('levqor'); print(s.origin if s else '')"],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    origin = Path(out.stdout.strip()) if out.stdout.strip() else None
    if origin is None or not origin.is_relative_to(checkout):
        return None
    if any(origin.is_relative_to(checkout / allowed) for allowed in (".venv", "sdk-gen")):
        return None
    return str(origin)


def test_the_core_package_cannot_shadow_the_sdk():
    assert _shadowing_levqor(ROOT) is None


def test_the_shadowing_check_sees_a_levqor_module_in_a_checkout(tmp_path):
    (tmp_path / "levqor.py").write_text("")
    assert _shadowing_levqor(tmp_path) == str(tmp_path / "levqor.py")


def _operation_handlers() -> dict[str, object]:
    """Every function the spec routes to (operationId in an x-openapi-router-controller module)."""
    import importlib

    import yaml

    spec = yaml.safe_load((ROOT / "openapi" / "openapi.yaml").read_text())
    found = {}
    for path_item in spec["paths"].values():
        for method, operation in path_item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options"):
                module = operation.get("x-openapi-router-controller") or path_item.get("x-openapi-router-controller")
                name = f"{module}.{operation['operationId']}"
                found[name] = getattr(importlib.import_module(module), operation["operationId"])
    return found


def test_handlers_take_typed_keyword_only_parameters_and_say_what_they_do():
    import inspect

    offenders = {}
    for name, function in _operation_handlers().items():
        signature = inspect.signature(inspect.unwrap(function))
        problems = [f"{p.name}: positional" for p in signature.parameters.values() if p.kind is not p.KEYWORD_ONLY] + [
            f"{p.name}: untyped" for p in signature.parameters.values() if p.annotation is p.empty
        ]
        if signature.return_annotation is signature.empty:
            problems.append("no return type")
        if not (inspect.unwrap(function).__doc__ or "").strip():
            problems.append("no docstring")
        if problems:
            offenders[name] = problems
    assert offenders == {}


def test_per_request_state_travels_only_as_the_request_state_object():
    """The guard, the security functions, Flask's hooks and the request log share one typed object
    (levqor_core.web.request_state); no module reads or writes its own `levqor.*` key in a scope."""
    import re

    pattern = re.compile(r"""scope(\.get\(|\.setdefault\(|\[)\s*["']levqor\.""")
    offenders = [
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if path.name != "request_state.py" and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_the_gate_reads_each_operations_area_from_the_spec():
    """The limit a key's call counts against is the operation's `x-levqor-area`, not its path."""
    from levqor_core.spec import load, operation_areas

    areas = operation_areas(load())
    assert areas["get_job"] == areas["create_job"] == areas["list_webhook_endpoints"] == "v1"
    assert areas["sandbox_get_job"] == areas["sandbox_list_workflows"] == "sandbox"
    assert areas["get_usage"] == areas["get_key"] == areas["get_health"] == "meta"


def test_only_the_job_poll_has_its_answer_read_by_the_gate_and_the_mark_is_checked():
    """`x-levqor-held-answer` in the spec, not an operation id in the code, says which operation's
    answer the gate reads; it must name a job by a `job_id` path parameter, and stays out of the
    public spec."""
    import copy

    from levqor_core.spec import held_answer_operations, load, public_json

    spec = load()
    assert held_answer_operations(spec) == {"get_job", "handlers.jobs.get_job"}
    assert "x-levqor-held-answer" not in public_json(spec)

    wrong = copy.deepcopy(spec)
    wrong["paths"]["/v1/workflows"]["get"]["x-levqor-held-answer"] = "job"  # no job_id to name
    with pytest.raises(ValueError, match="list_workflows"):
        held_answer_operations(wrong)
    wrong = copy.deepcopy(spec)
    wrong["paths"]["/v1/jobs/{job_id}"]["get"]["x-levqor-held-answer"] = "workflow"
    with pytest.raises(ValueError, match="get_job"):
        held_answer_operations(wrong)
