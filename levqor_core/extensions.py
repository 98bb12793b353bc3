"""Bare extension instances, initialised by the app factory.

Flask-Limiter's instance lives in `levqor_core.web.limiter`: the domain modules import `db` from
here, and that must not load a web framework."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
csrf = CSRFProtect()
