"""/developer: the overview and the API-keys dashboard (key, usage, chart, audit trail)."""

import logging
from datetime import datetime, timedelta

import redis
from flask import current_app, render_template
from flask_login import current_user

from levqor_core.accounts import service as accounts
from levqor_core.columns import utcnow
from levqor_core.keys import service as keys
from levqor_core.limits import tiers
from levqor_core.metering import counters as metering

from .. import charts, snippets
from . import bp
from ._render import login_required, page_or_fragment

log = logging.getLogger(__name__)

GRACE_CHOICES = [
    (0, "Stop the old key immediately"),
    (3600, "Keep the old key working for 1 hour"),
    (86400, "Keep the old key working for 24 hours"),
]


def _redis():
    return current_app.extensions["levqor.redis"]


def _next_creation(events: list, now: datetime) -> datetime | None:
    """When the daily key-creation limit lets this account create a key again (None: now), from
    its newest events."""
    latest = next((e for e in events if e.event in ("created", "rolled")), None)
    if latest is None:
        return None
    again = latest.at + timedelta(days=1) / tiers.KEY_CREATIONS_PER_DAY
    return again if again > now else None


def dashboard_context(account, now: datetime) -> dict:
    """Everything /developer/api-keys shows, always for the signed-in account only."""
    visible = keys.visible_keys(account.id, now)
    active = next((k for k in visible if k.status == "active"), None)
    try:
        usage = metering.usage_snapshot(_redis(), account, active.id if active else None, now)
    except redis.RedisError as err:
        # The counters live in Redis; the rest of the page still works while it is away.
        log.warning("usage unavailable: %s", err)
        usage = None
    history = metering.daily_history(_redis(), account.id, now)
    events = keys.events(account.id, limit=20)
    return {
        "active": active,
        "expiring": [k for k in visible if k.status == "expiring"],
        "usage": usage,
        "resets_at": datetime.fromisoformat(usage["resets_at"]) if usage else None,
        "sandbox_resets_at": datetime.fromisoformat(usage["sandbox"]["resets_at"]) if usage else None,
        "chart": charts.daily_chart(history),
        "events": events,
        "next_creation": _next_creation(events, now),
        "grace_choices": GRACE_CHOICES,
        "tier": tiers.get(account.tier),
        "may_create_keys": accounts.may_create_keys(account),
        "now": now,
    }


@bp.get("/developer")
def developer():
    examples = snippets.examples(current_app.config["PUBLIC_BASE_URL"])  # pinned, not the request's Host
    quick_start = next(e for e in examples if e.operation_id == "sandbox_create_job")
    context = {"quick_start": quick_start}
    if current_user.is_authenticated:
        context["active"] = keys.active_key(current_user.id)
    return render_template("developer/overview.html", **context)


@bp.get("/developer/api-keys")
@login_required
def api_keys():
    return page_or_fragment(
        "developer/api_keys.html",
        {
            "key-panel": "developer/_key_panel.html",
            "usage": "developer/_usage.html",
            "key-events": "developer/_events.html",
        },
        **dashboard_context(current_user, utcnow()),
    )
