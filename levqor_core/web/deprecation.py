"""Deprecated operations say so on every answer: `Deprecation` (RFC 9745) and `Sunset` (RFC 8594).

The spec is the only place a deprecation is written: an operation with `deprecated: true` carries
`x-deprecated-at` (the date it was deprecated) and `x-sunset` (the date it stops working), and
`.spectral.yaml` requires both. Read once at start-up; each answer costs one dict lookup.
"""

import calendar
import datetime as dt
from email.utils import format_datetime

from connexion.context import operation as current_operation
from flask import Flask

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def _date(value, what: str) -> dt.datetime:
    """A spec date (YAML reads an unquoted 2027-06-01 as a date) as midnight UTC."""
    if isinstance(value, str):
        value = dt.date.fromisoformat(value)
    if not isinstance(value, dt.date):
        raise ValueError(f"{what} must be a date (YYYY-MM-DD), not {value!r}")
    return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)


def headers_by_operation(spec: dict, changelog_url: str | None = None) -> dict[str, dict[str, str]]:
    """The headers each deprecated operation answers with, by operationId."""
    found = {}
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if not op or not op.get("deprecated"):
                continue
            where = f"{method.upper()} {path}"
            if "x-deprecated-at" not in op:
                raise ValueError(f"{where} is deprecated but has no x-deprecated-at date")
            since = _date(op["x-deprecated-at"], f"{where} x-deprecated-at")
            headers = {"Deprecation": f"@{calendar.timegm(since.utctimetuple())}"}
            if "x-sunset" in op:
                headers["Sunset"] = format_datetime(_date(op["x-sunset"], f"{where} x-sunset"), usegmt=True)
            if changelog_url:
                headers["Link"] = f'<{changelog_url}>; rel="deprecation"; type="text/html"'
            found[op["operationId"]] = headers
    return found


def register(app: Flask, spec: dict) -> None:
    """Add the headers to the answers of the spec's deprecated operations."""
    base = app.config.get("PUBLIC_BASE_URL") or ""
    by_operation = headers_by_operation(spec, f"{base}/docs/changelog" if base else "/docs/changelog")
    app.extensions["levqor.deprecations"] = by_operation
    if not by_operation:
        return  # nothing deprecated: no hook on the hot path

    @app.after_request
    def _deprecation_headers(response):
        try:
            # Connexion prefixes the router controller: handlers.health.get_health.
            operation_id = current_operation.operation_id.rpartition(".")[2]
        except (LookupError, RuntimeError, AttributeError):  # not an API operation
            return response
        for name, value in by_operation.get(operation_id, {}).items():
            if name == "Link" and response.headers.get("Link"):
                response.headers["Link"] = response.headers["Link"] + ", " + value
            else:
                response.headers[name] = value
        return response
