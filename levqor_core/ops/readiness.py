"""Dependency checks for readiness."""

import sqlalchemy as sa
from flask import current_app

from levqor_core.extensions import db


def readiness() -> dict[str, str]:
    checks = {}
    try:
        db.session.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as err:  # report, don't raise: this endpoint exists to say what is down
        checks["database"] = f"error: {type(err).__name__}"
        db.session.rollback()
    try:
        current_app.extensions["levqor.redis"].ping()
        checks["redis"] = "ok"
    except Exception as err:
        checks["redis"] = f"error: {type(err).__name__}"
    return checks
