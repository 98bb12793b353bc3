"""The Postman collection (v2.1) served at `/api/postman.json`.

`openapi-to-postmanv2` (npm, pinned) converts the public spec; `finish` then makes the result a
collection a run can go through from top to bottom (openapi/postman.py runs both, at `make
setup`, into build/postman/):

- requests in `ORDER` (health first, the key's revocation last), in one folder per tag;
- ids passed along by the spec's `links`: the operation a link starts from saves the linked
  value (`$response.body#/id`) in a collection variable, and the linked operations use it for
  their path parameter (create a job, then read and cancel that job);
- a status test on every request: the success status the spec declares for it;
- the key in the collection variable `apiKey` (the `x-api-key` header), the server in `baseUrl`
  (set to this server's public address when served), a fresh `Idempotency-Key` per run;
- "Revoke the active key" skipped unless the variable `revokeKey` is `yes`: a run must not end a
  developer's key by surprise.
"""

import copy
import json
import re
from pathlib import Path

from levqor_core.spec import resolve

ROOT = Path(__file__).resolve().parent.parent
COLLECTION_PATH = ROOT / "build" / "postman" / "levqor.postman_collection.json"
METHODS = ("get", "put", "post", "delete", "patch")

# The run's order. Operations missing here run after these, before the revocation, in spec order.
ORDER = [
    "get_health",
    "get_readiness",
    "list_workflows",
    "get_workflow",
    "create_job",
    "get_job",
    "list_jobs",
    "cancel_job",
    "create_webhook_endpoint",
    "list_webhook_endpoints",
    "get_webhook_endpoint",
    "test_webhook_endpoint",
    "delete_webhook_endpoint",
    "sandbox_list_workflows",
    "sandbox_get_workflow",
    "sandbox_create_job",
    "sandbox_get_job",
    "sandbox_list_jobs",
    "sandbox_cancel_job",
    "sandbox_create_webhook_endpoint",
    "sandbox_list_webhook_endpoints",
    "sandbox_get_webhook_endpoint",
    "sandbox_test_webhook_endpoint",
    "sandbox_delete_webhook_endpoint",
    "trigger_event",
    "sandbox_trigger_event",
    "get_usage",
    "get_postman_collection",
    "get_key",
    "list_key_events",
]
LAST = "revoke_key"  # ends the key every other request uses
# A creation whose job a later request cancels: the spec's example of a job that keeps running.
BODY_EXAMPLE = {"create_job": "delay", "sandbox_create_job": "delay"}
_BODY_POINTER = re.compile(r"^\$response\.body#/(\w+)$")


def _operations(spec: dict) -> dict[str, tuple[str, str, dict]]:
    """operationId -> (METHOD, path as Postman writes it, operation)."""
    found = {}
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                postman_path = re.sub(r"\{(\w+)\}", r":\1", path)
                found[item[method]["operationId"]] = (method.upper(), postman_path, item[method])
    return found


def success_status(operation: dict) -> int:
    """The operation's success status: the first 2xx the spec lists for it (`POST /v1/jobs`
    lists `202` before a replay's `200`; the collection sends a fresh Idempotency-Key)."""
    return next(int(code) for code in operation["responses"] if str(code).startswith("2"))


def variable_name(source_operation_id: str, parameter: str) -> str:
    """The collection variable a link's value is kept in (`job_id`, `sandbox_job_id`...)."""
    return f"sandbox_{parameter}" if source_operation_id.startswith("sandbox_") else parameter


def links(spec: dict) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """From the spec's links: what each operation saves ({operationId: {variable: body field}})
    and what each uses ({operationId: {path parameter: variable}})."""
    saves: dict[str, dict[str, str]] = {}
    uses: dict[str, dict[str, str]] = {}
    for operation_id, (_, _, operation) in _operations(spec).items():
        for code, response in operation["responses"].items():
            if not str(code).startswith("2"):
                continue
            for link in resolve(spec, response).get("links", {}).values():
                link = resolve(spec, link)
                for parameter, expression in link.get("parameters", {}).items():
                    match = _BODY_POINTER.match(str(expression))
                    if not match:
                        continue
                    name = variable_name(operation_id, parameter)
                    saves.setdefault(operation_id, {})[name] = match.group(1)
                    uses.setdefault(link["operationId"], {})[parameter] = name
    return saves, uses


def _requests(items: list):
    for item in items:
        if "item" in item:
            yield from _requests(item["item"])
        else:
            yield item


def _script(lines: list[str]) -> dict:
    return {"type": "text/javascript", "exec": lines}


def finish(collection: dict, spec: dict) -> dict:
    """The converter's collection of the public `spec`, made runnable (see the module docstring)."""
    out = copy.deepcopy(collection)
    operations = _operations(spec)
    by_request = {(method, path): op_id for op_id, (method, path, _) in operations.items()}
    saves, uses = links(spec)
    rank = {op_id: i for i, op_id in enumerate(ORDER)}
    extra = [op_id for op_id in operations if op_id not in rank and op_id != LAST]
    rank |= {op_id: len(ORDER) + i for i, op_id in enumerate(extra)} | {LAST: len(ORDER) + len(extra)}

    def operation_of(item: dict) -> str:
        request = item["request"]
        path = "/" + "/".join(request["url"]["path"])
        return by_request[(request["method"], path)]

    for item in _requests(out["item"]):
        op_id = operation_of(item)
        _, _, operation = operations[op_id]
        status = success_status(operation)
        title = json.dumps(f"{item['name']}: status {status}")  # a JavaScript string literal
        tests = [
            f"pm.test({title}, function () {{",
            f"    pm.response.to.have.status({status});",
            "});",
        ]
        for name, field in saves.get(op_id, {}).items():
            tests.append(f'pm.collectionVariables.set("{name}", pm.response.json().{field});')
        events = [{"listen": "test", "script": _script(tests)}]
        if op_id == LAST:
            events.append(
                {
                    "listen": "prerequest",
                    "script": _script(
                        [
                            "// Revokes the key in apiKey: only when asked to (revokeKey = yes).",
                            'if (pm.variables.get("revokeKey") !== "yes") { pm.execution.skipRequest(); }',
                        ]
                    ),
                }
            )
        item["event"] = events
        item["request"].pop("name", None)
        for variable in item["request"]["url"].get("variable", []):
            if variable["key"] in uses.get(op_id, {}):
                variable["value"] = "{{" + uses[op_id][variable["key"]] + "}}"
        for header in item["request"].get("header", []):
            if header["key"] == "Idempotency-Key":
                header.pop("disabled", None)
                header["value"] = "{{$guid}}"  # a fresh key each run: a rerun creates a new job
        if op_id in BODY_EXAMPLE:
            body = resolve(spec, operation["requestBody"])["content"]["application/json"]
            item["request"]["body"]["raw"] = json.dumps(body["examples"][BODY_EXAMPLE[op_id]]["value"], indent=2)

    def first_rank(item: dict) -> int:
        if "item" in item:
            return min(first_rank(child) for child in item["item"])
        return rank[operation_of(item)]

    def order(items: list) -> list:
        for item in items:
            if "item" in item:
                item["item"] = order(item["item"])
        return sorted(items, key=first_rank)

    out["item"] = order(out["item"])
    variables = {v["key"]: v for v in out.get("variable", [])}
    variables["baseUrl"] = {"key": "baseUrl", "value": _production_server(spec), "type": "string"}
    variables["apiKey"] = {"key": "apiKey", "value": "", "type": "string"}
    variables["revokeKey"] = {"key": "revokeKey", "value": "no", "type": "string"}
    for name in sorted({name for saved in saves.values() for name in saved}):
        variables[name] = {"key": name, "value": "", "type": "string"}
    out["variable"] = list(variables.values())
    out["auth"] = {
        "type": "apikey",
        "apikey": [
            {"key": "key", "value": "x-api-key", "type": "string"},
            {"key": "value", "value": "{{apiKey}}", "type": "string"},
            {"key": "in", "value": "header", "type": "string"},
        ],
    }
    return out


def _production_server(spec: dict) -> str:
    absolute = [s["url"] for s in spec.get("servers", []) if s["url"].startswith("https://")]
    return absolute[0] if absolute else ""


def load(path: Path = COLLECTION_PATH) -> dict | None:
    """The built collection, or None where it was not built (no `make setup` here)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def served(collection: dict, base_url: str) -> bytes:
    """The collection as this server serves it: `baseUrl` names this server."""
    out = copy.deepcopy(collection)
    for variable in out["variable"]:
        if variable["key"] == "baseUrl":
            variable["value"] = base_url
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
