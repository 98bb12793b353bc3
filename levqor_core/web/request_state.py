"""One request's shared state: what the request guard, the security functions, the handlers and
the request log know about a call, as one typed object.

It rides in the ASGI scope under one key that only this module names. Connexion's layers and the
WSGI bridge copy the scope shallowly, so the guard (which makes it), the security function (which
says whose key it was), Flask's teardown (whose portal session it was) and the guard again at the
end (which logs the call) all hold the same object."""

from dataclasses import dataclass, field

from flask import request

_SCOPE_KEY = "levqor.state"


@dataclass(slots=True, eq=False)
class RequestState:
    request_id: str
    # The Flask app's extensions: its gate, GitHub's signing keys (several apps may share a process).
    extensions: dict
    # The body as the guard read it: signatures are checked over these bytes, a failed call logs them.
    body: bytes | None = None
    # Whose call it is: a key's account (the security function), or the signed-in developer's.
    account_id: int | None = None
    key_id: str | None = None
    # Added to the response whatever its status: the gate's rate-limit headers.
    response_headers: dict[str, str] = field(default_factory=dict)

    @property
    def gate(self):
        return self.extensions["levqor.gate"]

    def called_by(self, account_id: int, key_id: str | None = None) -> None:
        self.account_id, self.key_id = account_id, key_id


def begin(scope: dict, request_id: str, extensions: dict) -> RequestState:
    """The state of the request this scope starts (the guard calls it, first)."""
    state = scope[_SCOPE_KEY] = RequestState(request_id, extensions)
    return state


def of(scope: dict) -> RequestState | None:
    """The state in an ASGI scope (None outside the guard: a test's bare app)."""
    return scope.get(_SCOPE_KEY)


def of_flask_request() -> RequestState | None:
    """The state of the request Flask is handling (through the WSGI bridge's environ)."""
    scope = request.environ.get("asgi.scope")
    return of(scope) if scope else None
