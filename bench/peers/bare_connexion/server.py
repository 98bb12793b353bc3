"""A bare Connexion 3 FlaskApp: one GET operation from a tiny spec, Connexion's defaults, nothing else.

The benchmark's reference for what Connexion itself costs; served like the app (gunicorn, uvicorn
workers): gunicorn -k uvicorn_worker.UvicornWorker -w 2 --chdir bench/peers/bare_connexion server:app
"""

from pathlib import Path

import connexion

BODY = {"status": "ok", "version": "1.0.0"}


def get_health():
    return BODY


app = connexion.FlaskApp(__name__, specification_dir=str(Path(__file__).resolve().parent))
app.add_api("openapi.yaml")
