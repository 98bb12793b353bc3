"""/status: the API's health as a page people read (the footer's Status), beside the JSON of
/api/health and /api/health/ready that machines read."""

from flask import current_app, render_template

from levqor_core.ops import readiness

from . import bp

LABELS = {"database": "Database", "redis": "Rate limits, usage and queues (Redis)"}


@bp.get("/status")
def status_page():
    checks = readiness.readiness()
    ready = all(value == "ok" for value in checks.values())
    rows = [(LABELS.get(name, name), value == "ok") for name, value in checks.items()]
    page = render_template("status/status.html", ready=ready, rows=rows, version=current_app.config["API_VERSION"])
    return page, 200 if ready else 503
