"""The spec's examples: every response shows one, and each one is what its schema allows.

Swagger UI and the SDK docs show these examples as what the API returns, so a missing one leaves
a blank and a stale one misleads. No app is needed: the spec is read as a file."""

import jsonschema
import pytest

from levqor_core import billing, errors, problems
from levqor_core.apijobs import problems as job_problems
from levqor_core.apijobs import workflows
from levqor_core.keys import format as key_format
from levqor_core.keys import service as keys
from portal import sandbox_calls as portal_sandbox

from .helpers import load_spec

SPEC = load_spec()
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


def resolve(node):
    """Follow `$ref`s (local to the spec) until a real object."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local refs are expected, not {ref}"
        node = SPEC
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not")


def json_schema(schema) -> dict:
    """An OpenAPI 3.0 schema as plain JSON Schema (draft 4): refs inlined, `nullable: true` as
    "or null", `example` dropped. Walks keywords, so a property named `example` is kept."""
    if isinstance(schema, bool):
        return schema
    schema = resolve(schema)
    out = {}
    for key, value in schema.items():
        if key in ("nullable", "example"):
            continue
        if key in _SCHEMA_MAPS:
            out[key] = {name: json_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            out[key] = [json_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = json_schema(value)
        else:
            out[key] = value
    return {"anyOf": [out, {"type": "null"}]} if schema.get("nullable") else out


def operations():
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def responses():
    """(where, response) for every component response and every inline operation response."""
    for name, response in SPEC["components"].get("responses", {}).items():
        yield f"components/responses/{name}", response
    for where, operation in operations():
        for code, response in operation.get("responses", {}).items():
            if "$ref" not in response:  # a component: listed above
                yield f"{where} {code}", response


def request_bodies():
    for name, body in SPEC["components"].get("requestBodies", {}).items():
        yield f"components/requestBodies/{name}", body
    for where, operation in operations():
        body = operation.get("requestBody")
        if body is not None and "$ref" not in body:
            yield f"{where} requestBody", body


def media_types(pairs):
    for where, holder in pairs:
        for media_type, media in resolve(holder).get("content", {}).items():
            yield pytest.param(media, id=f"{where} {media_type}")


def examples_of(media) -> list:
    """The example values a media type shows (its `example`, or each of its `examples`)."""
    if "example" in media:
        return [pytest.param(media["example"], id="example")]
    return [
        pytest.param(resolve(example)["value"], id=name)
        for name, example in media.get("examples", {}).items()
        if "value" in resolve(example)
    ]


def problem_examples():
    for param in media_types(responses()):
        (media,) = param.values
        if resolve(media["schema"]) is SPEC["components"]["schemas"]["Problem"]:
            for example in examples_of(media):
                yield pytest.param(example.values[0], id=f"{param.id} {example.id}")


def media_example(response: str, media_type: str = "application/json"):
    return SPEC["components"]["responses"][response]["content"][media_type]["example"]


@pytest.mark.parametrize("media", media_types(responses()))
def test_every_response_body_has_an_example(media):
    schema = resolve(media.get("schema", {}))
    assert "example" in media or media.get("examples") or "example" in schema, "no example for this response"


@pytest.mark.parametrize(
    ("media", "value"),
    [
        pytest.param(media.values[0], example.values[0], id=f"{media.id} {example.id}")
        for media in [*media_types(responses()), *media_types(request_bodies())]
        for example in examples_of(media.values[0])
    ],
)
def test_every_example_matches_its_schema(media, value):
    schema = json_schema(media["schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(value)
    ]
    assert not errors, errors


def test_the_workflow_examples_are_the_catalogue_as_served():
    assert media_example("WorkflowList") == workflows.listing()
    assert media_example("WorkflowOk") == workflows.read(media_example("WorkflowOk")["id"])


def _problem_kinds() -> dict[str, tuple[int, str]]:
    """slug -> (status, title) of every typed problem the app defines."""
    assert billing and job_problems and keys and portal_sandbox  # imported so their subclasses exist
    kinds, todo = {}, [problems.Problem]
    while todo:
        kind = todo.pop()
        todo.extend(kind.__subclasses__())
        kinds.setdefault(kind.slug, (kind.status, kind.title))
    return kinds


@pytest.mark.parametrize("example", problem_examples())
def test_problem_examples_name_a_problem_the_app_raises(example):
    base = problems.TYPE_BASE
    assert example["type"].startswith(base)
    slug, kinds = example["type"][len(base) :], _problem_kinds()
    assert slug in kinds or slug in errors._TYPES_BY_STATUS.values(), f"the app never answers {slug}"
    if slug in kinds:
        assert (example["status"], example["title"]) == kinds[slug]


def test_key_examples_use_a_well_formed_key_and_its_hint():
    new_key = SPEC["paths"]["/key/new"]["post"]["responses"]["201"]["content"]["application/json"]["example"]
    assert key_format.is_well_formed(new_key["key"])
    assert new_key["hint"] == key_format.hint(new_key["key"])
