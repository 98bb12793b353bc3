"""Entry point: `app` is the ASGI (Connexion) app to serve; `flask_app` is for the flask CLI."""

import gc

from levqor_core.app import create_app

app = create_app()
flask_app = app.app
# What start-up built (~180,000 objects) lives as long as the process. Frozen, it is left out of
# the collector's full passes, each of which scanned all of it: ~85 ms with every request in
# flight waiting (README "Speed").
gc.freeze()
