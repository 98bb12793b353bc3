"""/health"""

from flask import current_app

from levqor_core.ops import readiness as health

from ._reply import Reply
from ._reply import ok as reply


def get_health() -> Reply:
    """Liveness: the process answers."""
    return reply({"status": "ok", "version": current_app.config["API_VERSION"]})


def get_readiness() -> Reply:
    """Readiness: the database and Redis answer."""
    checks = health.readiness()
    ready = all(v == "ok" for v in checks.values())
    return reply({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)
