"""Operations pages: what is running (/developer/ops) and Prometheus metrics (/metrics).

The figures come from levqor_core.ops.status; these views only render them.
"""

import hmac
import logging
from datetime import timedelta

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user

from levqor_core.accounts import service as accounts
from levqor_core.extensions import db
from levqor_core.ops import metrics, notion
from levqor_core.ops import periodic as background
from levqor_core.ops import status as ops_status

from ..helpers import charts
from ._render import login_required

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


def _redis():
    return current_app.extensions["levqor.redis"]


def _is_operator() -> bool:
    return accounts.is_operator(current_user)


def _not_operator():
    # Key counts and sync state are internal: only the team (the ops role) sees them.
    message = "This page is for the Levqor team. Ask an operator to run: flask accounts grant-role <your email> ops."
    return render_template("errors/message.html", title="Operators only", message=message), 403


def _cache_seconds() -> float:
    return float(current_app.config.get("OPS_DB_CACHE_SECONDS", ops_status.DB_CACHE_SECONDS))


def _snapshot(history: bool) -> dict:
    return ops_status.snapshot(_redis(), db.session, _cache_seconds(), history=history)


@bp.get("/developer/ops")
@login_required
def ops():
    if not _is_operator():
        return _not_operator()
    context = {
        "sync": ops_status.notion_sync_status(_redis()),
        "notion_configured": notion.is_configured(),
        "operator": _is_operator(),
    }
    if request.htmx:  # the sync card polling itself
        return render_template("ops/_sync_status.html", **context)
    status = _snapshot(history=True)
    chart = None
    if status.get("history") is not None:
        chart = charts.health_chart(status["history"], last_day=status["now"].date() - timedelta(days=1))
    return render_template("ops/index.html", status=status, chart=chart, **context)


@bp.get("/developer/ops/status")
@login_required
def ops_status_fragment():
    """The self-refreshing part of the page: workers, queues, jobs, Redis, HTTP errors."""
    if not _is_operator():
        return _not_operator()
    return render_template("ops/_status.html", status=_snapshot(history=False))


@bp.post("/developer/ops/notion-sync")
@login_required
def start_sync():
    if not _is_operator():
        return _not_operator()
    if not notion.is_configured():
        flash("Notion is not configured: set NOTION_TOKEN and NOTION_PARENT_PAGE_ID.")
    elif ops_status.notion_sync_status(_redis()).get("running"):
        flash("A Notion sync is already running.")
    else:
        background.enqueue("notion-sync")
        flash("Notion sync queued.")
    return redirect(url_for("ops.ops"))


@bp.get("/metrics")
def prometheus_metrics():
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
            return Response("metrics need the bearer token\n", status=401, mimetype="text/plain")
    elif not current_app.config.get("METRICS_OPEN_WITHOUT_TOKEN", False):
        # On a dyno with no token: closed, rather than publishing business volumes to anyone.
        log.warning("GET /metrics refused: set METRICS_TOKEN to enable it")
        return Response("metrics are closed: set METRICS_TOKEN\n", status=403, mimetype="text/plain")
    body = metrics.render(_redis(), db.session, _cache_seconds())
    return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8")
