"""Connexion's validators, adjusted: request bodies must be strict JSON, and response validation
uses a compiled validator, so checking every response stays cheap.

Connexion builds a fresh jsonschema validator for every response it checks; on the hot path that
cost more than the key check, limits and metering together. This validator compiles each
response schema once (jsonschema-rs), and hands any body it rejects to Connexion's own validator,
so the error a non-conforming response produces is exactly Connexion's.
"""

import json
import math
import threading

import jsonschema_rs
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import BadRequestProblem
from connexion.validators import VALIDATOR_MAP
from connexion.validators.json import JSONRequestBodyValidator, JSONResponseBodyValidator

from levqor_core import spec as contract

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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"The number {text[:40]} is too large to represent.")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON: numbers must be finite.")


class StrictJSONRequestBodyValidator(JSONRequestBodyValidator):
    """Python's json module accepts NaN and Infinity and reads 1e999 as infinity; none of them can
    be stored as JSON or sent back, so they are refused here as a 400 rather than failing later.
    A discriminated body (JobCreate) is checked by its envelope here, and its variant in the core,
    which answers with a typed problem (`invalid-job-input`, `unknown-workflow`) rather than
    jsonschema's "is not valid under any of the given schemas" (levqor_core.spec.envelope)."""

    def __init__(self, *, schema: dict, **kwargs) -> None:
        super().__init__(schema=contract.envelope(schema), **kwargs)

    async def _parse(self, stream, scope):
        body = b"".join([message async for message in stream]).decode(self._encoding)
        if not body:
            return None
        try:
            return json.loads(body, parse_float=_finite_float, parse_constant=_no_constant)
        except ValueError as err:  # also the integer digit limit, and JSONDecodeError
            raise BadRequestProblem(detail=str(err)) from None


class CompiledJSONResponseBodyValidator(JSONResponseBodyValidator):
    def _validate(self, body):
        if not compiled(self._schema).is_valid(body):
            super()._validate(body)  # raises Connexion's NonConformingResponseBody with its message


def validator_map() -> dict:
    """Connexion's validators, with the strict one for JSON requests and the compiled one for JSON responses."""
    body = MediaTypeDict(
        {
            media_type: StrictJSONRequestBodyValidator if validator is JSONRequestBodyValidator else validator
            for media_type, validator in VALIDATOR_MAP["body"].items()
        }
    )
    response = MediaTypeDict(
        {
            media_type: CompiledJSONResponseBodyValidator if validator is JSONResponseBodyValidator else validator
            for media_type, validator in VALIDATOR_MAP["response"].items()
        }
    )
    return VALIDATOR_MAP | {"body": body, "response": response}
