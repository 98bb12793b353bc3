"""A bare Connexion 3 AsyncApp: the bare FlaskApp peer's one GET operation from the same tiny spec,
with an `async def` handler; Connexion's defaults, nothing else. Served like the app:
gunicorn -k uvicorn_worker.UvicornWorker -w 2 --chdir bench/peers/bare_asyncapp server:app
"""

from pathlib import Path

import connexion

BODY = {"status": "ok", "version": "1.0.0"}


async def get_health():
    return BODY


app = connexion.AsyncApp(__name__, specification_dir=str(Path(__file__).resolve().parent))
app.add_api("openapi.yaml")
