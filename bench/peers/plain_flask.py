"""A plain Flask view returning the same JSON as the bare Connexion peer, for gunicorn's gthread workers:

gunicorn -k gthread --threads 10 -w 2 --chdir bench/peers plain_flask:app
"""

from flask import Flask

BODY = {"status": "ok", "version": "1.0.0"}

app = Flask(__name__)


@app.get("/api/health")
def health():
    return BODY
