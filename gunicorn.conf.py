"""Read by gunicorn from the working directory (the Procfile's `web`): Prometheus multiprocess mode.

Each worker process writes its metrics to files in PROMETHEUS_MULTIPROC_DIR and /metrics adds
them up, so the figures cover every worker rather than whichever one answered the scrape.
"""

import glob
import os
import tempfile


def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="levqor-prometheus-")
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):  # counters of a previous run
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # inherited by the workers forked after this


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# Heroku's router is the only client of a dyno: trust its X-Forwarded-For / -Proto, so the
# per-IP log-in limit and the key audit trail see the developer's address, not the router's.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")
