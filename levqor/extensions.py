"""Bare extension instances, initialised by the app factory."""

from flask_limiter import Limiter
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


def _no_default_key():
    # Every limit names its own key function; a missing one is a programming error.
    raise RuntimeError("limits must pass key_func")


limiter = Limiter(key_func=_no_default_key, headers_enabled=True)
