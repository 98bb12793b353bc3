"""The spec as served to SDK and collection generators (/api/openapi.json): the public operations
only, with examples a tool can send as they are, each workflow's input, links from a webhook
endpoint's creation, and the Postman collection built from it (/api/postman.json)."""

import json
import socket

import jsonschema
import pytest

from levqor_core import postman
from levqor_core import spec as contract
from levqor_core.apijobs import workflows
from levqor_core.webhooks import targets

FULL = contract.load()
METHODS = ("get", "put", "post", "delete", "patch")
INTERNAL = [
    (path, method)
    for path, item in FULL["paths"].items()
    for method in METHODS
    if method in item and contract.is_internal(item[method])
]


@pytest.fixture
def served(client) -> dict:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_the_served_spec_leaves_the_internal_operations_out(served, client):
    assert INTERNAL, "the spec marks key creation, checkout, the billing portal and Stripe's webhook x-internal"
    for path, method in INTERNAL:
        assert method not in served["paths"].get(path, {}), f"{method.upper()} {path} is served"
    public = {(path, method) for path, method, _ in _operations(FULL)} - set(INTERNAL)
    assert {(path, method) for path, method, _ in _operations(served)} == public
    text = json.dumps(served)
    assert "x-internal" not in text and "x-openapi-router-controller" not in text and "handlers." not in text
    # What only the internal operations use goes with them.
    for schema in ("CheckoutRequest", "RedirectUrl", "WebhookReceipt", "KeyCreate", "NewApiKey"):
        assert schema not in served["components"]["schemas"]
    assert "Billing" not in {tag["name"] for tag in served["tags"]}
    # The YAML twin too.
    assert "/key/new" not in client.get("/api/openapi.yaml").text


def test_the_app_still_routes_and_validates_the_internal_operations(client):
    # Not 404: each is routed, and refused for what it lacks (a session; Stripe's signature).
    assert client.post("/api/key/new", json={}).status_code == 401
    assert client.post("/api/billing/checkout", json={"tier": "pro"}).status_code == 401
    stripe = client.post("/api/billing/webhook", json={"id": "evt_1"})
    assert stripe.status_code in (400, 503) and stripe.headers["content-type"] == "application/problem+json"


def test_the_full_and_the_public_spec_are_both_valid_openapi(served):
    from connexion.spec import OpenAPISpecification  # validates against the OpenAPI 3.0 schema

    OpenAPISpecification(json.loads(json.dumps(contract.public(FULL), default=str)))
    OpenAPISpecification(served)


def test_every_parameter_carries_its_own_example_which_its_schema_allows(served):
    """Dredd and Postman read a parameter's own `example` (not one behind the schema's $ref)."""
    seen = set()
    for path, method, operation in _operations(served):
        for parameter in operation.get("parameters", []):
            where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
            assert "example" in parameter, f"{where} has no example"
            jsonschema.validate(parameter["example"], parameter["schema"])
            seen.add(parameter["name"])
    assert {"cursor", "Idempotency-Key", "job_id", "endpoint_id", "workflow_id"} <= seen


def test_the_cursor_examples_are_cursors_each_listing_accepts(make_account, client):
    _, key = make_account()
    for path in ("/v1/jobs", "/sandbox/v1/jobs"):
        (cursor,) = [p["example"] for p in FULL_PARAMS(path) if p["name"] == "cursor"]
        response = client.get(f"/api{path}", params={"cursor": cursor}, headers={"x-api-key": key})
        assert response.status_code == 200, response.text


def FULL_PARAMS(path: str) -> list[dict]:  # noqa: N802 (reads like the constant it resolves)
    refs = FULL["paths"][path]["get"]["parameters"]
    return [FULL["components"]["parameters"][ref["$ref"].rsplit("/", 1)[1]] for ref in refs]


def test_path_examples_name_what_the_response_examples_show(served):
    def example_ids(operation, status="200"):
        media = operation["responses"][status]["content"]["application/json"]
        values = [media["example"]] if "example" in media else [e["value"] for e in media["examples"].values()]
        return {value["id"] for value in values}

    for path, method, operation in _operations(served):
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and method == "get":
                assert example_ids(operation) == {parameter["example"]}, f"GET {path}"
    workflow = served["paths"]["/v1/workflows/{workflow_id}"]["get"]
    assert workflow["parameters"][0]["example"] == "text-stats" == next(iter(example_ids(workflow)))


def _resolved(spec: dict, node):
    """`node` with the spec's local $refs inlined (the spec has no cycles)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = spec
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _resolved(spec, target)
        return {k: _resolved(spec, v) for k, v in node.items() if k not in ("example", "description")}
    if isinstance(node, list):
        return [_resolved(spec, v) for v in node]
    return node


def _as_openapi(schema):
    """A catalogue schema (JSON Schema 2020-12) spelled as OpenAPI 3.0 spells it: a `type` list
    as anyOf (an array of anything)."""
    if isinstance(schema, dict):
        out = {k: _as_openapi(v) for k, v in schema.items()}
        if isinstance(out.get("type"), list):
            kinds = out.pop("type")
            out["anyOf"] = [{"type": t, "items": {}} if t == "array" else {"type": t} for t in kinds]
        return out
    return schema


def test_each_workflow_has_its_input_schema_in_the_spec():
    job_create = FULL["components"]["schemas"]["JobCreate"]
    mapping = job_create["discriminator"]["mapping"]
    assert set(mapping) == set(workflows.CATALOGUE), "a job variant per workflow, and none other"
    for workflow_id, workflow in workflows.CATALOGUE.items():
        variant = _resolved(FULL, {"$ref": mapping[workflow_id]})
        assert variant["properties"]["workflow"]["enum"] == [workflow_id]
        assert variant["properties"]["input"] == _as_openapi(workflow.input_schema), workflow_id


def test_text_stats_with_an_empty_input_is_invalid_by_the_spec_and_refused_by_the_app(client, make_account):
    schema = _resolved(FULL, FULL["components"]["schemas"]["JobCreate"])
    validator = jsonschema.Draft4Validator(schema)
    assert not validator.is_valid({"workflow": "text-stats", "input": {}})
    assert not validator.is_valid({"workflow": "no-such-workflow", "input": {}})
    for workflow in workflows.CATALOGUE.values():
        assert validator.is_valid({"workflow": workflow.id, "input": workflow.example_input}), workflow.id
    _, key = make_account()
    refused = client.post("/api/v1/jobs", json={"workflow": "text-stats", "input": {}}, headers={"x-api-key": key})
    assert refused.status_code == 400 and refused.json()["type"].endswith("/invalid-job-input")
    assert refused.json()["errors"] == ["(input): 'text' is a required property"]


@pytest.mark.parametrize("area", ["", "sandbox_"])
def test_webhook_endpoint_creation_links_to_its_get_test_and_delete(served, area):
    path = "/sandbox/v1/webhook_endpoints" if area else "/v1/webhook_endpoints"
    links = served["paths"][path]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {
        f"{area}get_webhook_endpoint",
        f"{area}test_webhook_endpoint",
        f"{area}delete_webhook_endpoint",
    }
    operation_ids = {operation["operationId"] for _, _, operation in _operations(served)}
    for link in links.values():
        assert link["parameters"] == {"endpoint_id": "$response.body#/id"}
        assert link["operationId"] in operation_ids


def test_the_webhook_example_url_is_one_the_ssrf_guard_accepts(monkeypatch):
    """The example's host, example.com, resolves to public addresses (hooks.example.com, the old
    one, resolves to nothing); this machine has no DNS, so it is given the Internet's answer."""
    real = socket.getaddrinfo
    public = {"example.com": "93.184.215.14"}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in public:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (public[host], port))]
        if host.endswith(".example.com"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    bodies = FULL["components"]["requestBodies"]["WebhookEndpointCreate"]["content"]["application/json"]
    url = bodies["example"]["url"]
    target = targets.check(url, allow_private=False)
    assert (target.host, target.address) == ("example.com", "93.184.215.14")
    with pytest.raises(targets.TargetRefused, match="does not resolve"):
        targets.check("https://hooks.example.com/levqor", allow_private=False)


# -- the Postman collection ------------------------------------------------------------------------------


def test_the_collection_is_served_with_this_servers_base_url(client, app):
    if app.extensions.get("levqor.postman") is None:
        pytest.fail("build/postman is missing: `make setup` (or `make postman`) builds it")
    response = client.get("/api/postman.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    collection = response.json()
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables["baseUrl"] == app.config["PUBLIC_BASE_URL"] + "/api"
    assert variables["apiKey"] == "" and variables["revokeKey"] == "no"
    assert collection["auth"]["type"] == "apikey"


def test_the_collection_is_ordered_chained_and_checks_each_status(client):
    collection = client.get("/api/postman.json").json()
    items = [request for folder in collection["item"] for request in folder["item"]]
    names = [item["name"] for item in items]
    assert names.index("Submit a job") < names.index("Get a job") < names.index("Cancel a job")
    assert names[-1] == "Revoke the active key"
    by_name = {item["name"]: item for item in items}
    for item in items:
        tests = next(e for e in item["event"] if e["listen"] == "test")["script"]["exec"]
        assert any("pm.response.to.have.status(" in line for line in tests), item["name"]
    saves = "\n".join(next(e for e in by_name["Submit a job"]["event"] if e["listen"] == "test")["script"]["exec"])
    assert 'pm.collectionVariables.set("job_id", pm.response.json().id);' in saves
    assert by_name["Cancel a job"]["request"]["url"]["variable"][0]["value"] == "{{job_id}}"
    assert by_name["Get a sandbox job"]["request"]["url"]["variable"][0]["value"] == "{{sandbox_job_id}}"
    idempotency = [h for h in by_name["Submit a job"]["request"]["header"] if h["key"] == "Idempotency-Key"]
    assert idempotency == [
        {"key": "Idempotency-Key", "value": "{{$guid}}", "description": idempotency[0]["description"]}
    ]


def test_a_server_without_the_built_collection_answers_503(client, app, monkeypatch):
    monkeypatch.setitem(app.extensions, "levqor.postman", None)
    response = client.get("/api/postman.json")
    assert response.status_code == 503
    assert response.json()["detail"].endswith("run `make setup`.")


def test_success_status_is_the_first_2xx_the_spec_lists():
    assert postman.success_status(FULL["paths"]["/v1/jobs"]["post"]) == 202
    assert postman.success_status(FULL["paths"]["/v1/webhook_endpoints/{endpoint_id}"]["delete"]) == 204


def test_only_the_specs_own_paths_go_through_the_spec_layers_routers(client, cx, monkeypatch):
    """Every other request goes straight on to routing; what the spec layer serves is unchanged."""
    from starlette.routing import Router

    from levqor_core.web.public_spec import PublicSpecMiddleware

    client.get("/api/health")  # builds the middleware stack
    layer = next(m for m in cx.middleware.middleware_stack if isinstance(m, PublicSpecMiddleware))
    routed = []
    original = Router.__call__

    async def counted(router, scope, receive, send):
        if router is layer.router:
            routed.append(scope["path"])
        await original(router, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counted)
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/v1/nope").status_code == 404
    assert client.get("/docs").status_code in (200, 301, 302, 308)
    assert routed == []
    assert client.get("/api/openapi.json").json()["openapi"].startswith("3.")
    assert client.get("/api/openapi.yaml").text.startswith(("openapi", "components", "info"))
    slash = client.get("/api/openapi.json/")
    assert slash.status_code == 307 and slash.headers["location"].endswith("/api/openapi.json")
    assert routed == ["/api/openapi.json", "/api/openapi.yaml", "/api/openapi.json/"]
