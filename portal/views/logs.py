"""/developer/logs: the signed-in developer's API calls of the last 7 days (the request log).

Every query is the signed-in account's (`current_user.id`): another account's calls cannot be
listed, filtered or opened, whatever the URL says."""

from flask import abort, render_template, request
from flask_login import current_user

from levqor_core.columns import utcnow
from levqor_core.requestlog import queries

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
    """One call in full: its query and, for an error, the request body and the problem returned."""

    found = queries.find(current_user.id, request_id[:32], utcnow())
    if found is None:
        abort(404)
    build = lambda: {"entry": found}  # noqa: E731
    return page_or_fragment("developer/log_entry.html", {"log-detail": ("developer/_log_detail.html", build)})
