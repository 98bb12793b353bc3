"""Operations pages: background-job status (/developer/ops) and Prometheus metrics (/metrics)."""

import hmac

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob

from levqor import background, metrics, notion
from levqor.queue import API_QUEUE

bp = Blueprint("ops", __name__)


def _redis():
    return current_app.extensions["levqor.redis"]


def _is_operator() -> bool:
    allowed = {e.strip().lower() for e in current_app.config.get("OPS_EMAILS", "").split(",") if e.strip()}
    return current_user.is_authenticated and current_user.email.lower() in allowed


def sync_status() -> dict:
    """The latest Notion sync job as the fragment shows it (RQ status and job.meta progress)."""
    job_id = _redis().get(background.last_job_key("notion-sync"))
    status = {"job_id": None, "state": "never", "progress": {}, "error": None}
    if job_id is None:
        return status
    try:
        job = RQJob.fetch(job_id.decode(), connection=_redis())
    except NoSuchJobError:
        return status
    progress = job.get_meta(refresh=True).get("progress", {})
    state = job.get_status(refresh=False)
    status.update(job_id=job.id, state=str(state.value if state else "unknown"), progress=progress)
    total = progress.get("total") or 0
    status["percent"] = int(100 * progress.get("done", 0) / total) if total else (100 if state == "finished" else 0)
    status["running"] = status["state"] in ("queued", "started", "deferred", "scheduled")
    if status["state"] == "failed":
        status["error"] = "The last sync failed; it resumes where it stopped when run again."
    return status


def _not_operator():
    # Key counts and sync state are internal: only the team (OPS_EMAILS) sees them.
    message = "This page is for the Levqor team. Ask an operator to add your email to OPS_EMAILS."
    return render_template("errors/message.html", title="Operators only", message=message), 403


@bp.get("/developer/ops")
@login_required
def ops():
    if not _is_operator():
        return _not_operator()
    context = {"sync": sync_status(), "notion_configured": notion.is_configured(), "operator": _is_operator()}
    if request.headers.get("HX-Request") == "true":
        return render_template("ops/_sync_status.html", **context)
    return render_template("ops/index.html", **context)


@bp.post("/developer/ops/notion-sync")
@login_required
def start_sync():
    if not _is_operator():
        return _not_operator()
    if not notion.is_configured():
        flash("Notion is not configured: set NOTION_TOKEN and NOTION_PARENT_PAGE_ID.")
    elif sync_status().get("running"):
        flash("A Notion sync is already running.")
    else:
        background.enqueue("notion-sync")
        flash("Notion sync queued.")
    return redirect(url_for("ops.ops"))


@bp.get("/metrics")
def prometheus_metrics():
    token = current_app.config.get("METRICS_TOKEN")
    if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return Response("metrics need the bearer token\n", status=401, mimetype="text/plain")
    body = metrics.render(_redis(), API_QUEUE)
    return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8")
