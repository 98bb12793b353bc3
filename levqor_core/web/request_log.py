"""The web side of the request log: each request's `Request-Id`, the access log line that shows
it, and telling the recorder which account a portal session's API call belongs to.

The id is always made here: an incoming X-Request-Id is not taken over (a client could then
collide with, or impersonate, another call's id in someone's log and in ours)."""

import contextvars
import logging
import os

from flask import Flask, request
from flask_login import current_user

from levqor_core.web import request_state
from levqor_core.web.api_paths import is_api_path

HEADER = b"request-id"
# Set while the response starts, read by the access log filter (uvicorn logs the line inside the
# send() that starts the response, in the same task).
CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("levqor_request_id", default=None)


def new_request_id() -> str:
    """`req_` and 24 hex digits (96 random bits): unique enough to look a call up by."""
    return "req_" + os.urandom(12).hex()


class AccessLogRequestId(logging.Filter):
    """Appends `request_id=req_…` to uvicorn's access log line (which cannot print headers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = CURRENT.get()
        if request_id is not None and isinstance(record.msg, str):
            # In the message, not the arguments: uvicorn's own formatter (make run) unpacks exactly
            # its five. The id is "req_" and hex digits, nothing %-formatting would read.
            record.msg = f"{record.msg} request_id={request_id}"
        return True


def install_access_log_filter() -> None:
    """On uvicorn's access logger, which gunicorn's UvicornWorker points at `--access-logfile`;
    its handlers are replaced by the worker, its filters stay."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, AccessLogRequestId) for f in logger.filters):
        logger.addFilter(AccessLogRequestId())


def register(app: Flask) -> None:
    @app.teardown_request
    def _portal_session_caller(_exc=None):
        # A key's call got its account from the security function; an API call made with a portal
        # session is the signed-in account's. Teardown runs even when the handler raised.
        state = request_state.of_flask_request()
        if state is None or state.account_id is not None or not is_api_path(request.path):
            return
        try:
            if current_user.is_authenticated:
                state.called_by(current_user.id)
        except Exception:  # never fail a request over its log entry (a user row gone mid-call)
            return
