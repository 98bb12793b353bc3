"""The bare RQ pool's worker class for bench/jobs.py: RQ's own Worker, nothing changed, in a module
that imports the echo function's module first, so the pool forks its work horses with it loaded,
as the app's worker forks them with the app built. Without it every bare job paid the import
(~0.3 s: Flask and jsonschema come with levqor_core.apijobs.workflows) and the comparison measured that.

rq worker-pool -n 4 -P bench/peers -w rq_bare.PreloadedWorker -u $REDIS_URL <queue>
"""

from rq import Worker

from levqor_core.apijobs import workflows  # noqa: F401  (loaded before the fork)


class PreloadedWorker(Worker):
    """RQ's Worker (a name to hand to `rq worker-pool -w`)."""
