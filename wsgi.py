"""Entry point: `app` is the ASGI (Connexion) app to serve; `flask_app` is for the flask CLI."""

from levqor_core.app import create_app

app = create_app()
flask_app = app.app
