"""RQ tasks for the periodic jobs: each enters the core through levqor_core.ops.periodic.run()."""

from rq import get_current_job

from jobs.tasks import _app
from levqor_core.ops import periodic as background


def _run(name: str, **kwargs) -> dict:
    app = _app().app
    with app.app_context():
        job = get_current_job()
        if job is None:
            return background.run(name, **kwargs)
        app.extensions["levqor.redis"].set(background.last_job_key(name), job.id, ex=30 * 86400)

        def progress(done: int, total: int, counts: dict) -> None:
            # Read by the portal's self-polling status fragment.
            job.meta["progress"] = {"done": done, "total": total} | counts
            job.save_meta()

        result = background.run(name, progress=progress, **kwargs)
        job.meta["progress"] = {**job.meta.get("progress", {}), **result, "phase": "finished"}
        job.save_meta()
        return result


def notion_sync() -> dict:
    """Upsert one Notion "API Keys" row per key; only changed rows are written."""
    return _run("notion-sync")


def quota_alerts() -> dict:
    """Alert developers and the team when an account crosses 80 % or 100 % of its quota."""
    return _run("quota-alerts")


def health_log(day: str | None = None) -> dict:
    """Write the System Health Log entry for `day` (default: yesterday, UTC)."""
    return _run("health-log", day=day)


def requeue_jobs() -> dict:
    """Enqueue again API jobs that nothing would run (Redis outage, dead worker)."""
    return _run("requeue-jobs")


def billing_downgrade() -> dict:
    """Move accounts whose unpaid or cancelled plan has run out back to Sandbox."""
    return _run("billing-downgrade")


def purge_jobs() -> dict:
    """Delete API jobs (input and result) that finished more than JOB_RETENTION_DAYS ago."""
    return _run("purge-jobs")
