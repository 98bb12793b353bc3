"""/developer/logs: the signed-in developer's API calls of the last 7 days (the request log).

Every query is the signed-in account's (`current_user.id`): another account's calls cannot be
listed, filtered or opened, whatever the URL says."""

import json
from urllib.parse import urlencode

from flask import abort, current_app, render_template, request, url_for
from flask_login import current_user

from levqor_core.columns import utcnow
from levqor_core.requestlog import queries
from levqor_core.requestlog import recorder as log_recorder

from ..helpers import redact, reference
from . import bp
from ._render import login_required, page_or_fragment


def _log_context(filters: queries.Filters, cursor: str | None) -> dict:

    found = queries.page(current_user.id, utcnow(), filters, cursor)
    return {
        "entries": found.entries,
        "next_cursor": found.next_cursor,
        "filters": filters,
        "status_classes": queries.STATUS_CLASSES,
        "retention_days": queries.RETENTION.days,
        "from_cursor": bool(cursor),
        "page_id": cursor or "newest",
    }


@bp.get("/developer/logs")
@login_required
def logs():
    """The whole page, or (htmx, the filter form) only the table."""
    filters = queries.Filters.parse(request.args)
    cursor = request.args.get("cursor")
    build = lambda: _log_context(filters, cursor)  # noqa: E731
    return page_or_fragment("developer/logs.html", {"request-log": ("developer/_request_log.html", build)})


@bp.get("/developer/logs/more")
@login_required
def logs_more():
    """The next page's rows for "Load more" (htmx); a browser without it gets the page from there."""
    filters = queries.Filters.parse(request.args)
    context = _log_context(filters, request.args.get("cursor"))
    if not request.htmx:
        return render_template("developer/logs.html", **context)
    # The page's rows go before the "Load more" footer; the footer replaces itself out of band.
    rows = render_template("developer/_log_rows.html", **context)
    return rows + render_template("developer/_log_more.html", oob_more=True, **context)


@bp.get("/developer/logs/<request_id>")
@login_required
def log_entry(request_id: str):
    """One call in full: its query, the request body and what the API answered."""

    found = queries.find(current_user.id, request_id[:32], utcnow())
    if found is None:
        abort(404)
    build = lambda: detail_context(found)  # noqa: E731
    return page_or_fragment("developer/log_entry.html", {"log-detail": ("developer/_log_detail.html", build)})


def _pretty(text: str) -> str:
    """A whole JSON body indented to be read; anything else (a cut body, a form) as it was."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def detail_context(entry) -> dict:
    """The call's redacted query and bodies, and the reference's try-it for the same operation."""
    request_body = redact.text(entry.request_body)
    cut = log_recorder.MAX_BODY_CHARS
    context = {
        "entry": entry,
        "as_panel": True,
        "query": redact.text(entry.query),
        "request_body": _pretty(request_body),
        "request_body_cut": len(request_body) > cut and request_body.endswith("…"),
        "response_body": _pretty(redact.text(entry.response_body)),
        "response_body_cut": bool(entry.response_body)
        and len(entry.response_body) > cut * 2
        and entry.response_body.endswith("…"),
        "max_body": cut,
        "try_url": None,
        "operation": None,
        "body_for_try": False,
    }
    found = reference.match(current_app.config["PUBLIC_BASE_URL"], entry.method, entry.path)
    if found is not None:
        operation, path_params = found
        values = dict(path_params)
        known = {p.name for p in operation.params if p.where == "query"}
        for pair in (entry.query or "").split("&"):
            name, _, value = pair.partition("=")
            if name in known:
                values[name] = value
        # A whole, redaction-free JSON body only: a cut or redacted one would not be the same call.
        if request_body and "(redacted)" not in request_body and not context["request_body_cut"]:
            try:
                json.loads(request_body)
            except ValueError:
                pass
            else:
                values["body"] = request_body
                context["body_for_try"] = True
        # In the fragment, which the browser never sends: the body stays out of every server log.
        context["try_url"] = url_for("portal.api_docs") + f"#op-{operation.operation_id}&" + urlencode(values)
        context["operation"] = operation
    return context
