"""The periodic jobs' cron schedule (UTC), built from `levqor_core.ops.periodic.PERIODIC_JOBS`
with each job's JOBS_*_CRON setting; an empty setting takes that job off the schedule.

Loaded by the worker (jobs/worker.py starts RQ's CronScheduler with it); also usable on its own
as `rq cron jobs.schedule`.
"""

from rq import cron

from jobs.tasks import run_periodic
from levqor_core.ops import periodic
from levqor_core.queue import PERIODIC_QUEUE

for _name, _cron in periodic.schedule().items():
    if _cron:
        cron.register(
            run_periodic,
            PERIODIC_QUEUE,
            args=(_name,),
            cron=_cron,
            name=_name,
            job_timeout=periodic.JOB_TIMEOUT,
            result_ttl=periodic.RESULT_TTL,
        )
