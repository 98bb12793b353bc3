"""Example calls for every API operation (curl, Python, Node), generated from the spec.

Nothing here is written per operation: paths, parameters, bodies and authentication come from
openapi/openapi.yaml, so a new operation gets its examples by being described there.
"""

import functools
import json
import pprint
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from levqor_core.spec import resolve

SPEC = Path(__file__).resolve().parents[2] / "openapi" / "openapi.yaml"
METHODS = ("get", "post", "put", "patch", "delete")
KEY_ENV = "LEVQOR_API_KEY"


@dataclass
class Example:
    operation_id: str
    method: str
    path: str  # as in the spec, with {params}
    summary: str
    tag: str
    auth: str  # "key" | "session" | "none"
    deprecated: bool = False
    sunset: str = ""  # the operation's x-sunset date, when deprecated
    url: str = ""
    headers: dict = field(default_factory=dict)
    body: object = None
    curl: str = ""
    python: str = ""
    node: str = ""


@functools.lru_cache(maxsize=1)
def load_spec(path: Path = SPEC) -> dict:
    return yaml.safe_load(path.read_text())


def _example_value(spec: dict, schema: dict, name: str = "value"):
    schema = resolve(spec, schema or {})
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {p: _example_value(spec, props[p], p) for p in schema.get("required", []) if p in props}
    if kind == "array":
        return [_example_value(spec, schema.get("items", {}), name)]
    return {"integer": 1, "number": 1.0, "boolean": True}.get(kind, f"<{name}>")


def _body_example(spec: dict, operation: dict):
    body = resolve(spec, operation.get("requestBody"))
    if not body:
        return None
    media = body.get("content", {}).get("application/json")
    if media is None:
        return None
    if "example" in media:
        return media["example"]
    if media.get("examples"):
        first = resolve(spec, next(iter(media["examples"].values())))
        return first.get("value")
    value = _example_value(spec, media.get("schema", {}))
    return value if (value or body.get("required")) else None


def _auth(spec: dict, operation: dict) -> str:
    requirements = operation.get("security", spec.get("security", []))
    schemes = {name for requirement in requirements for name in requirement}
    if not requirements:
        return "none"
    return "key" if "ApiKeyAuth" in schemes else "session"


def _js(value, indent: int) -> str:
    # JSON is valid JavaScript; re-indent nested lines to sit inside the call.
    return json.dumps(value, indent=2).replace("\n", "\n" + " " * indent)


def _python_literal(value, indent: int) -> str:
    text = pprint.pformat(value, width=88 - indent, sort_dicts=False)
    return text.replace("\n", "\n" + " " * indent)


def _render(example: Example) -> None:
    method, url, headers, body = example.method.upper(), example.url, example.headers, example.body
    # curl
    lines = [f'curl -X {method} "{url}"']
    if example.auth == "key":
        lines.append(f'-H "x-api-key: ${KEY_ENV}"')
    lines += [f'-H "{k}: {v}"' for k, v in headers.items()]
    if body is not None:
        lines.append('-H "Content-Type: application/json"')
        lines.append("-d '" + json.dumps(body).replace("'", "'\\''") + "'")
    example.curl = " \\\n  ".join(lines)
    # Python (requests)
    py_headers = ([f'"x-api-key": os.environ["{KEY_ENV}"]'] if example.auth == "key" else []) + [
        f"{json.dumps(k)}: {json.dumps(v)}" for k, v in headers.items()
    ]
    args = [f'"{url}"']
    if py_headers:
        args.append("headers={" + ", ".join(py_headers) + "}")
    if body is not None:
        args.append("json=" + _python_literal(body, 4))
    imports = "import os\n\nimport requests\n\n" if example.auth == "key" else "import requests\n\n"
    example.python = (
        imports
        + f"response = requests.{example.method}(\n    "
        + ",\n    ".join(args)
        + ",\n)\nprint(response.status_code, response.json())"
    )
    # Node (built-in fetch, Node 18+)
    js_headers = ([f'"x-api-key": process.env.{KEY_ENV}'] if example.auth == "key" else []) + [
        f"{json.dumps(k)}: {json.dumps(v)}" for k, v in headers.items()
    ]
    if body is not None:
        js_headers.append('"Content-Type": "application/json"')
    options = [f'method: "{method}"']
    if js_headers:
        options.append("headers: { " + ", ".join(js_headers) + " }")
    if body is not None:
        options.append("body: JSON.stringify(" + _js(body, 2) + ")")
    example.node = (
        f'const response = await fetch("{url}", {{\n  '
        + ",\n  ".join(options)
        + ",\n});\nconsole.log(response.status, await response.json());"
    )


def examples(base_url: str, spec: dict | None = None) -> list[Example]:
    """One Example per operation, in spec order, with the calls written out for `base_url`."""
    spec = spec or load_spec()
    server = spec.get("servers", [{"url": ""}])[0]["url"].rstrip("/")
    found = []
    for path, item in spec.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            example = Example(
                operation_id=operation["operationId"],
                method=method,
                path=server + path,
                summary=operation.get("summary", ""),
                tag=(operation.get("tags") or ["Other"])[0],
                auth=_auth(spec, operation),
                deprecated=bool(operation.get("deprecated")),
                sunset=str(operation.get("x-sunset", "")),
            )
            concrete, query = server + path, []
            for param in [resolve(spec, p) for p in shared + operation.get("parameters", [])]:
                value = param.get("example", _example_value(spec, param.get("schema", {}), param["name"]))
                if param["in"] == "path":
                    concrete = concrete.replace("{" + param["name"] + "}", str(value))
                elif param["in"] == "query" and param.get("required"):
                    query.append(f"{param['name']}={value}")
                elif param["in"] == "header" and param.get("required"):
                    example.headers[param["name"]] = str(value)
            example.url = base_url.rstrip("/") + concrete + ("?" + "&".join(query) if query else "")
            example.body = _body_example(spec, operation)
            _render(example)
            found.append(example)
    return found


def by_tag(items: list[Example]) -> dict[str, list[Example]]:
    grouped: dict[str, list[Example]] = {}
    for item in items:
        grouped.setdefault(item.tag, []).append(item)
    return grouped


def webhook_events(spec: dict | None = None) -> list[dict]:
    """The events a webhook endpoint can receive, as the spec's `x-webhooks` documents them."""
    spec = spec or load_spec()
    return [
        {"type": name, "summary": item["post"]["summary"], "description": item["post"].get("description", "")}
        for name, item in spec.get("x-webhooks", {}).items()
    ]
