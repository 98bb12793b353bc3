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


# X-Forwarded-For / -Proto are believed only from these peers: Heroku's router reaches a dyno from
# its private network. uvicorn then takes the rightmost address that is not one of them, the one
# the router appended; "*" would make it take the leftmost, which the client writes, so anyone
# could dodge the per-IP log-in limit or forge the key audit trail.
PRIVATE_NETWORKS = "127.0.0.1,::1,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", PRIVATE_NETWORKS)
