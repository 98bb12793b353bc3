"""Response validation with a compiled validator, so checking every response stays cheap.

Connexion builds a fresh jsonschema validator for every response it checks; on the hot path that
cost more than the key check, limits and metering together. This validator compiles each
response schema once (jsonschema-rs), and hands any body it rejects to Connexion's own validator,
so the error a non-conforming response produces is exactly Connexion's.
"""

import threading

import jsonschema_rs
from connexion.datastructures import MediaTypeDict
from connexion.validators import VALIDATOR_MAP
from connexion.validators.json import JSONResponseBodyValidator

_compiled: dict[int, tuple[dict, jsonschema_rs.Draft4Validator]] = {}
_lock = threading.Lock()


def _plain(node, root: bool = False):
    """OpenAPI 3.0's `nullable: true` spelled as plain JSON Schema, as an acyclic copy.

    Connexion attaches the spec's `components` to each schema it validates with, and those
    components hold the same schemas again; only the top-level copy is kept."""
    if isinstance(node, dict):
        out = {
            k: _plain(v)
            for k, v in node.items()
            if k not in ("nullable", "example", "x-internal") and (root or k != "components")
        }
        if node.get("nullable"):
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def compiled(schema: dict) -> jsonschema_rs.Draft4Validator:
    entry = _compiled.get(id(schema))
    if entry is None or entry[0] is not schema:
        with _lock:
            # Keeping the schema referenced keeps its id from being reused by another dict.
            entry = _compiled[id(schema)] = (schema, jsonschema_rs.Draft4Validator(_plain(schema, root=True)))
    return entry[1]


class CompiledJSONResponseBodyValidator(JSONResponseBodyValidator):
    def _validate(self, body):
        if not compiled(self._schema).is_valid(body):
            super()._validate(body)  # raises Connexion's NonConformingResponseBody with its message


def validator_map() -> dict:
    """Connexion's validators, with the compiled one for JSON responses."""
    response = MediaTypeDict(
        {
            media_type: CompiledJSONResponseBodyValidator if validator is JSONResponseBodyValidator else validator
            for media_type, validator in VALIDATOR_MAP["response"].items()
        }
    )
    return VALIDATOR_MAP | {"response": response}
