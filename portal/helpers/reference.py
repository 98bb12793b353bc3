"""The API reference as the docs site shows it, read from openapi/openapi.yaml: the public
operations by tag (anything marked `x-internal: true` is left out), each with its parameters,
request body, responses and example calls; and which operation a logged call was.

Nothing here is written per operation: a new operation appears by being described in the spec."""

import json
import re
from dataclasses import dataclass, field

from levqor_core.spec import resolve

from . import snippets

HTTP_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


@dataclass
class Param:
    name: str
    where: str  # path | query | header
    required: bool
    type: str
    description: str
    example: object = None


@dataclass
class Field:
    name: str
    type: str
    required: bool
    description: str


@dataclass
class Response:
    status: str
    description: str
    schema_name: str = ""
    example: str = ""  # JSON, pretty-printed
    error: bool = False


@dataclass
class Operation:
    operation_id: str
    method: str
    path: str  # as the caller writes it, /api/... with {params}
    summary: str
    description: str
    tag: str
    auth: str  # key | session | none
    deprecated: bool
    sunset: str = ""
    params: list[Param] = field(default_factory=list)
    body_fields: list[Field] = field(default_factory=list)
    body_example: str = ""
    responses: list[Response] = field(default_factory=list)
    example: snippets.Example | None = None
    pattern: re.Pattern | None = None
    twin: "Operation | None" = None  # a sandbox operation's /v1 original, which documents both


@dataclass
class Tag:
    name: str
    description: str
    operations: list[Operation]

    @property
    def anchor(self) -> str:
        return "tag-" + self.name.lower()


def _type(spec: dict, schema: dict) -> str:
    schema = resolve(spec, schema or {})
    kind = schema.get("type") or ("object" if "properties" in schema else "")
    if kind == "array":
        return f"array of {_type(spec, schema.get('items', {}))}"
    if "enum" in schema:
        return f"{kind or 'string'}: " + " | ".join(str(v) for v in schema["enum"])
    if schema.get("format"):
        return f"{kind} ({schema['format']})"
    return kind or "any"


def _ref_name(node: dict) -> str:
    ref = (node or {}).get("$ref", "")
    return ref.rsplit("/", 1)[-1] if ref else ""


def _example_of(spec: dict, media: dict) -> str:
    if "example" in media:
        value = media["example"]
    elif media.get("examples"):
        value = resolve(spec, next(iter(media["examples"].values()))).get("value")
    else:
        value = snippets._example_value(spec, media.get("schema", {}))
    return json.dumps(value, indent=2) if value not in (None, {}, []) else ""


def _responses(spec: dict, operation: dict) -> list[Response]:
    found = []
    for status, response in operation.get("responses", {}).items():
        name = _ref_name(response)
        response = resolve(spec, response)
        content = response.get("content", {})
        media = content.get("application/json") or content.get("application/problem+json") or {}
        schema = media.get("schema", {})
        found.append(
            Response(
                status=str(status),
                description=response.get("description", "") or HTTP_REASONS.get(int(status), "")
                if str(status).isdigit()
                else response.get("description", ""),
                schema_name=_ref_name(schema) or name,
                example=_example_of(spec, media) if media else "",
                error=str(status)[0] in "45",
            )
        )
    return found


def _pattern(path: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", path)
    regex = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{regex}$")


def tags(base_url: str) -> list[Tag]:
    """The public operations by tag, in the spec's tag order."""
    spec = snippets.load_spec()
    server = spec.get("servers", [{"url": ""}])[0]["url"].rstrip("/")
    examples = {e.operation_id: e for e in snippets.examples(base_url, spec)}
    by_tag: dict[str, list[Operation]] = {t["name"]: [] for t in spec.get("tags", [])}
    for path, item in spec.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in snippets.METHODS:
            operation = item.get(method)
            if operation is None or operation.get("x-internal"):
                continue
            op_id = operation["operationId"]
            params = []
            for p in [resolve(spec, p) for p in shared + operation.get("parameters", [])]:
                schema = resolve(spec, p.get("schema", {}))
                params.append(
                    Param(
                        p["name"],
                        p["in"],
                        bool(p.get("required")),
                        _type(spec, schema),
                        p.get("description", "") or schema.get("description", ""),
                        p.get("example", schema.get("example")),
                    )
                )
            body_fields, body_example = [], ""
            body = resolve(spec, operation.get("requestBody"))
            if body:
                media = body.get("content", {}).get("application/json", {})
                schema = resolve(spec, media.get("schema", {}))
                required = set(schema.get("required", []))
                for name, prop in schema.get("properties", {}).items():
                    resolved = resolve(spec, prop)
                    body_fields.append(
                        Field(name, _type(spec, resolved), name in required, resolved.get("description", ""))
                    )
                example = examples[op_id].body if op_id in examples else None
                body_example = json.dumps(example, indent=2) if example is not None else _example_of(spec, media)
            tag = (operation.get("tags") or ["Other"])[0]
            by_tag.setdefault(tag, []).append(
                Operation(
                    operation_id=op_id,
                    method=method,
                    path=server + path,
                    summary=operation.get("summary", ""),
                    description=operation.get("description", ""),
                    tag=tag,
                    auth=snippets._auth(spec, operation),
                    deprecated=bool(operation.get("deprecated")),
                    sunset=str(operation.get("x-sunset", "")),
                    params=params,
                    body_fields=body_fields,
                    body_example=body_example,
                    responses=_responses(spec, operation),
                    example=examples.get(op_id),
                    pattern=_pattern(server + path),
                )
            )
    # A sandbox operation is its /v1 twin on mock data: it points there instead of repeating it.
    by_route = {(op.method, op.path): op for ops in by_tag.values() for op in ops}
    for ops in by_tag.values():
        for op in ops:
            if "/sandbox/" in op.path:
                op.twin = by_route.get((op.method, op.path.replace("/sandbox/", "/", 1)))
    descriptions = {t["name"]: t.get("description", "") for t in spec.get("tags", [])}
    return [Tag(name, descriptions.get(name, ""), ops) for name, ops in by_tag.items() if ops]


def intro() -> str:
    """The spec's own introduction (info.description), Markdown."""
    return snippets.load_spec().get("info", {}).get("description", "")


def operations(base_url: str) -> list[Operation]:
    return [op for tag in tags(base_url) for op in tag.operations]


def match(base_url: str, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """The public operation a logged call (method, path as requested) was, and its path parameters."""
    for op in operations(base_url):
        if op.method == method.lower():
            found = op.pattern.match(path)
            if found:
                return op, found.groupdict()
    return None
