"""Bare extension instances, initialised by the app factory."""

import functools
import logging

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


def limiter_callable(default):
    """For every key, limit-value, exempt_when and on_breach function handed to Flask-Limiter.

    Flask-Limiter takes any exception raised while it evaluates a limit for its storage failing:
    it switches the whole process to per-process memory counters for a while, so one anonymous
    request that made a key function raise let the next attempts of real accounts through. The
    wrapped function returns `default` instead (and logs), so only a real storage error can
    trip the fallback."""

    def wrap(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception:
                logging.getLogger(__name__).exception("limiter callable %s raised", fn.__qualname__)
                return default

        return guarded

    return wrap
