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


# X-Forwarded-For / -Proto are believed only from these peers. Heroku's router reaches a dyno from
# its private 10.0.0.0/8 network, and nothing else there may: the other private ranges are left
# out, so a client behind some other private-network proxy (a VPN, a container network, a
# corporate proxy reaching a self-hosted deployment) cannot choose its own address. uvicorn then
# takes the rightmost address that is not one of these, the one the router appended; "*" would
# make it take the leftmost, which the client writes, so anyone could dodge the per-address
# limits or forge the key audit trail. Elsewhere, set FORWARDED_ALLOW_IPS to your proxies.
HEROKU_ROUTER = "127.0.0.1,::1,10.0.0.0/8"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", HEROKU_ROUTER)
