"""Security functions named by the spec's securitySchemes."""

import asyncio
import inspect

from levqor_core import problems
from levqor_core.apijobs import poll_cache
from levqor_core.web import request_state


def area_of(scope: dict, state: request_state.RequestState) -> str:
    """Which limit a call counts against: its operation's `x-levqor-area` in the spec (the v1 quota,
    the sandbox cap), or neither (`meta`), as read at start-up (levqor_core.spec.operation_areas)."""
    operation_id = scope["extensions"]["connexion_routing"]["operation_id"]
    return state.extensions["levqor.operation_areas"].get(operation_id, "meta")


def polled_job(scope: dict, state: request_state.RequestState) -> str | None:
    """The job whose answer the gate may read with its round trip: the `job_id` of an operation
    marked `x-levqor-held-answer: job` in the spec (the job poll), when it is one of ours in form
    (anything else is for the database to refuse, and names no Redis key)."""
    if scope["extensions"]["connexion_routing"]["operation_id"] not in state.extensions["levqor.held_answers"]:
        return None
    job_id = scope.get("path_params", {}).get("job_id")
    return job_id if isinstance(job_id, str) and poll_cache.is_cacheable(job_id) else None


async def api_key_auth(api_key, required_scopes=None, request=None):
    """Admit the call through the gate (which raises the refusal); its rate-limit headers go on the response."""
    # Read from the ASGI scope: request.url and request.client build objects on every call.
    scope = request.scope
    client = scope.get("client")  # after the trusted proxies' X-Forwarded-For
    state = request_state.of(scope)
    try:
        admitted = await state.gate.authorize_async(
            api_key, area_of(scope, state), client=client[0] if client else None, job_id=polled_job(scope, state)
        )
    except problems.Problem as refusal:
        if caller := getattr(refusal, "caller", None):  # a valid key over its limits: still its call
            state.called_by(caller["account_id"], caller["key_id"])
        raise
    # The request guard adds them to the response, whatever its status.
    state.response_headers.update(admitted.pop("headers"))
    state.called_by(admitted["account_id"], admitted["key_id"])
    return admitted


def session_auth(cookie, required_scopes=None, request=None):
    """Let a portal session cookie through; the handler decides who it belongs to."""
    # The Flask session is decoded by Flask-Login in the handler; see handlers._caller.
    return {"session": True, "sub": None}


async def github_signature_auth(signature, required_scopes=None, request=None):
    """Admit a secret-scanning report that one of GitHub's keys signed (levqor_core.keys.github_signature)."""
    state = request_state.of(request.scope)
    # The raw body, as the request guard read it (Connexion has not parsed it yet).
    body = state.body or b""
    keys = state.extensions["levqor.github_keys"]
    identifier = request.headers.get("Github-Public-Key-Identifier")
    # In a thread: an unknown identifier may make it fetch GitHub's keys.
    await asyncio.to_thread(keys.verify, body, identifier, signature)
    return {"sub": "github-secret-scanning"}


# Called without the signature header too, to refuse that with its own problem (framework_costs.ApiKeyHandler).
github_signature_auth.answers_missing_credentials = True


# Connexion inspects a security function's signature on every call it checks (twice, ~9 µs each);
# a precomputed __signature__ turns that into an attribute read.
for _function in (api_key_auth, session_auth, github_signature_auth):
    _function.__signature__ = inspect.signature(_function)
