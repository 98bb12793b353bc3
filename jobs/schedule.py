"""The periodic jobs' schedule: cron expressions (UTC) from the environment.

Loaded by the worker (jobs/worker.py starts RQ's CronScheduler with it); also usable on its own
as `rq cron jobs.schedule`. An empty setting disables that job.
"""

import os

from rq import cron

from jobs import background
from levqor_core.queue import PERIODIC_QUEUE

SCHEDULE = {
    "notion-sync": os.environ.get("JOBS_NOTION_SYNC_CRON", "15 2 * * *"),
    "quota-alerts": os.environ.get("JOBS_QUOTA_ALERTS_CRON", "*/10 * * * *"),
    "health-log": os.environ.get("JOBS_HEALTH_LOG_CRON", "5 0 * * *"),
    "requeue-jobs": os.environ.get("JOBS_REQUEUE_CRON", "* * * * *"),
    "billing-downgrade": os.environ.get("JOBS_BILLING_DOWNGRADE_CRON", "30 0 * * *"),
    "purge-jobs": os.environ.get("JOBS_PURGE_CRON", "45 0 * * *"),
}
FUNCTIONS = {
    "notion-sync": background.notion_sync,
    "quota-alerts": background.quota_alerts,
    "health-log": background.health_log,
    "requeue-jobs": background.requeue_jobs,
    "billing-downgrade": background.billing_downgrade,
    "purge-jobs": background.purge_jobs,
}

for _name, _cron in SCHEDULE.items():
    if _cron:
        cron.register(FUNCTIONS[_name], PERIODIC_QUEUE, cron=_cron, name=_name, job_timeout=3600, result_ttl=7 * 86400)
