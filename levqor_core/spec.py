"""The contract as its readers get it: the full spec, which the app routes and validates with, and
the public spec, which is what SDK and collection generators read (`/api/openapi.json`,
`make sdk`, the Postman collection).

The public spec leaves out every operation marked `x-internal: true` (portal-session and
machine-to-machine endpoints: key creation, checkout, Stripe's webhook...), the tags and
components only those used, and the `x-openapi-router-controller` / `x-apikeyInfoFunc` wiring
that names the app's modules. Everything else is the spec as written. Pure functions on dicts:
nothing here loads a web framework.
"""

import copy
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = ROOT / "openapi" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Which limit an operation's key calls count against: `v1` (the quota), `sandbox` (the daily cap),
# absent: neither (the burst limit only).
AREA_EXTENSION = "x-levqor-area"
# An operation whose answer the gate may read with its round trip: `job` (the job poll, its
# `job_id` path parameter naming the answer: levqor_core.apijobs.poll_cache).
HELD_ANSWER_EXTENSION = "x-levqor-held-answer"
# Wiring for Connexion and the app (the gate's area, the guard's body limit), not part of the contract.
_WIRING = (
    "x-openapi-router-controller",
    "x-apikeyInfoFunc",
    AREA_EXTENSION,
    HELD_ANSWER_EXTENSION,
    "x-levqor-max-body-bytes",
    "x-levqor-host",
)


def load(path: Path = SPEC_PATH) -> dict:
    """openapi/openapi.yaml (or `path`), parsed."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def operation_areas(spec: dict) -> dict[str, str]:
    """Each operation's area (`meta` where the spec names none), read once at start-up; by its
    operationId and by the id Connexion routes it under (`<x-openapi-router-controller>.<id>`)."""
    return {name: operation.get(AREA_EXTENSION, "meta") for name, operation in _operations_by_id(spec)}


def held_answer_operations(spec: dict) -> frozenset[str]:
    """The operations marked `x-levqor-held-answer: job`, by both ids as `operation_areas`. Each must
    take a `job_id` path parameter: that is what names the answer."""
    held = set()
    for name, operation in _operations_by_id(spec):
        kind = operation.get(HELD_ANSWER_EXTENSION)
        if kind is None:
            continue
        parameters = [resolve(spec, parameter) for parameter in operation.get("parameters", [])]
        if kind != "job" or not any(p.get("in") == "path" and p.get("name") == "job_id" for p in parameters):
            raise ValueError(f"{name}: {HELD_ANSWER_EXTENSION} is `job`, on an operation with a job_id path parameter")
        held.add(name)
    return frozenset(held)


def _operations_by_id(spec: dict):
    """(id, operation) for every operation with an operationId, under both of its ids."""
    for item in spec.get("paths", {}).values():
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            yield operation["operationId"], operation
            controller = operation.get("x-openapi-router-controller") or item.get("x-openapi-router-controller")
            if controller:
                yield f"{controller}.{operation['operationId']}", operation


def resolve(spec: dict, node):
    """Follow local $refs (`#/components/...`), one level at a time, as often as needed."""
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def is_internal(operation: dict) -> bool:
    return operation.get("x-internal") is True


def public(spec: dict) -> dict:
    """A copy of `spec` without its internal operations and what only they use."""
    out = copy.deepcopy(spec)
    for path in list(out.get("paths", {})):
        item = out["paths"][path]
        for method in METHODS:
            if method in item and is_internal(item[method]):
                del item[method]
        if not any(method in item for method in METHODS):
            del out["paths"][path]
    _strip_wiring(out)
    prune_components(out)
    used_tags = {tag for op in _operations(out) for tag in op.get("tags", [])}
    if "tags" in out:
        out["tags"] = [tag for tag in out["tags"] if tag["name"] in used_tags]
    return out


def _operations(spec: dict):
    for section in ("paths", "x-webhooks"):
        for item in spec.get(section, {}).values():
            for method in METHODS:
                if isinstance(item.get(method), dict):
                    yield item[method]


def _strip_wiring(node) -> None:
    if isinstance(node, dict):
        for key in _WIRING:
            node.pop(key, None)
        for value in node.values():
            _strip_wiring(value)
    elif isinstance(node, list):
        for value in node:
            _strip_wiring(value)


def _refs(node, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _reached(components: dict, roots) -> set[str]:
    """Every `#/components/...` ref `roots` reaches, directly or through other components."""
    reached: set[str] = set()
    _refs(roots, reached)
    todo = list(reached)
    while todo:
        _, _, kind, name = todo.pop().split("/", 3)
        found: set[str] = set()
        _refs(components.get(kind, {}).get(name.replace("~1", "/").replace("~0", "~")), found)
        todo.extend(found - reached)
        reached |= found
    return reached


def prune_components(spec: dict) -> None:
    """Drop components nothing outside `components` reaches, following refs between components.
    Security schemes are kept as long as a security requirement names them."""
    components = spec.get("components", {})
    reached = _reached(components, {k: v for k, v in spec.items() if k != "components"})
    schemes = {name for op in _operations(spec) for req in op.get("security", []) for name in req}
    schemes |= {name for req in spec.get("security", []) for name in req}
    for kind, members in list(components.items()):
        if not isinstance(members, dict):
            continue
        for name in list(members):
            escaped = name.replace("~", "~0").replace("/", "~1")
            keep = name in schemes if kind == "securitySchemes" else f"#/components/{kind}/{escaped}" in reached
            if not keep:
                del members[name]
        if not members:
            del components[kind]


def envelope(schema):
    """A schema without its discriminated `oneOf`: JobCreate's envelope (`workflow` and an `input`
    object) without the variant per workflow. The app checks the envelope on the way in and the
    variant in the core (typed problems); the SDK generator and the breaking-change gate read it
    too (openapi-generator would turn the variants into a wrapper class; Optic compares the
    variants but not the properties beside them)."""
    if isinstance(schema, dict) and "discriminator" in schema and "oneOf" in schema:
        return {k: v for k, v in schema.items() if k not in ("oneOf", "discriminator")}
    return schema


def envelopes(spec: dict) -> dict:
    """A copy of `spec` with every component schema as its `envelope`."""
    out = copy.deepcopy(spec)
    schemas = out.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        schemas[name] = envelope(schema)
    return out


def has_variants(spec: dict) -> bool:
    return any(envelope(s) is not s for s in spec.get("components", {}).get("schemas", {}).values())


def paths_reaching_variants(spec: dict) -> set[str]:
    """The paths whose operations use, directly or through other schemas, a schema with variants."""
    components = spec.get("components", {})
    variants = {
        "#/components/schemas/" + name.replace("~", "~0").replace("/", "~1")
        for name, schema in components.get("schemas", {}).items()
        if envelope(schema) is not schema
    }
    return {path for path, item in spec.get("paths", {}).items() if _reached(components, item) & variants}


def only_paths(spec: dict, paths: set[str]) -> dict:
    """A copy of `spec` with just these paths and the components they still use."""
    out = copy.deepcopy(spec)
    out["paths"] = {path: item for path, item in spec.get("paths", {}).items() if path in paths}
    prune_components(out)
    return out


def public_json(spec: dict) -> str:
    """The public spec as JSON text (dates as ISO strings), for tools that read a file."""
    return json.dumps(public(spec), indent=2, ensure_ascii=False, default=str)
