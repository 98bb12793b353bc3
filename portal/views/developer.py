"""/developer: the overview and the API-keys dashboard (key panel, usage, chart, audit trail).

Each dashboard fragment is built from its own context: the usage poll reads counters and the
card's part held in Redis, the key panel its keys and the key-creation limit's window, the audit
trail its events.
"""

import hashlib
import json
import logging
from datetime import datetime, timedelta

import htmx_flask
import redis
import sqlalchemy as sa
from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_limiter.errors import RateLimitExceeded
from flask_login import current_user

from levqor_core import problems, redis_conn, tiers
from levqor_core.accounts import reauth
from levqor_core.accounts import service as accounts
from levqor_core.columns import utcnow
from levqor_core.extensions import db
from levqor_core.keys import leaks
from levqor_core.keys import service as keys
from levqor_core.metering import card as usage_card
from levqor_core.metering import counters as metering
from levqor_core.requestlog import queries as requestlog
from levqor_core.web import key_creation_limit as creation_limit
from levqor_core.webhooks import service as webhook_service
from levqor_core.webhooks.models import WebhookEndpoint

from ..helpers import charts, onboarding, snippets
from ..helpers.formats import duration, when
from . import bp
from ._render import Fragment, fresh_log_in_required, login_required, page_or_fragment

log = logging.getLogger(__name__)

GRACE_CHOICES = [
    (0, "Stop the old key immediately"),
    (3600, "Keep the old key working for 1 hour"),
    (86400, "Keep the old key working for 24 hours"),
]

# The fragments that show a key's state listen for it (hx-trigger="key-changed from:body").
KEY_CHANGED = "key-changed"


def _redis():
    return redis_conn.for_limits()


def key_possible_after(next_creation: datetime) -> str:
    """When the daily limit lets a new key be created, in the words the revoke and roll dialogs share."""
    return f"You can create a new key after {when(next_creation)} (one a day)"


def next_key(next_creation: datetime | None, next_emergency: datetime | None, revoked: bool = False) -> str:
    """When a new key is possible, from the limits' own windows: before a revoke (the dialog, the
    panel) or after it (its notice)."""
    if next_creation is None:
        return "Create a new key when you need one." if revoked else "You can create a new key right away."
    text = key_possible_after(next_creation)
    if next_emergency is None:
        text += (
            ", or get one at once with “Replace now” if the key leaked"
            if revoked
            else "; if the key leaked, use “Replace now” instead: it revokes the key and issues a new one at once"
        )
    return text + "."


def revoke_effect(next_creation: datetime | None, next_emergency: datetime | None) -> str:
    """What revoking does and when a new key is possible, for the revoke dialog and the panel."""
    return "It stops working at once: calls with it fail. " + next_key(next_creation, next_emergency)


def roll_question(hint: str, grace_seconds: int, creation_after: datetime) -> str:
    """The roll dialog's question for one grace choice: what follows, and when a new key is possible
    after it. Not `next_key`'s ending: its "Replace now" is for a key revoked while the limit is spent."""
    if grace_seconds:
        kept = duration(grace_seconds)
        current = f"Your current key keeps working for {kept}, listed as the previous key until then."
    else:
        current = "Your current key stops working at once: calls with it fail."
    spent = f"This uses today's key creation. {key_possible_after(creation_after)}."
    return f"Roll key {hint}? A new key is issued and shown once, here. {current} {spent}"


def key_panel_context(account, now: datetime) -> dict:
    ring = keys.key_ring(account.id, now)
    next_creation = creation_limit.next_creation_at(account.id)
    # The emergency replacement is offered only when the daily limit stands in the way.
    next_emergency = creation_limit.next_emergency_at(account.id) if next_creation else None
    creation_after_this = creation_limit.creation_after_spending(now)
    # Only while a roll is possible: otherwise the panel's button is off and says when it will be.
    may_roll = ring.active is not None and next_creation is None
    return {
        "active": ring.active,
        "expiring": ring.expiring,
        "next_creation": next_creation,
        "next_emergency": next_emergency,
        # Had the limit been spent by the create or roll this panel offers.
        "creation_after_this": creation_after_this,
        "revoke_effect": revoke_effect(next_creation, next_emergency),
        # By grace period in seconds, as the grace select offers them.
        "roll_questions": {
            seconds: roll_question(ring.active.hint, seconds, creation_after_this) for seconds, _ in GRACE_CHOICES
        }
        if may_roll
        else {},
        "has_second_factor": reauth.has_second_factor(account),
        "grace_choices": GRACE_CHOICES,
        "tier": tiers.get(account.tier),
        "may_create_keys": accounts.may_create_keys(account),
        # A key GitHub found in public, not yet replaced: said first, with the way out.
        "leak": leaks.unanswered_leak(account.id),
        "now": now,
    }


def usage_context(account, now: datetime) -> dict:
    """What the usage card shows; reads only (it is polled every few seconds), and no SQL of its
    own while its database part is held in Redis (levqor_core.metering.card)."""
    r = _redis()
    try:
        held = usage_card.state(r, account.id, now.date())
    except redis.RedisError:
        held = usage_card.from_database(account.id, now.date())
    try:
        usage = metering.usage_snapshot(r, account, held.active_key_id, now)
    except redis.RedisError as err:
        # The counters live in Redis; the rest of the page still works while it is away.
        log.warning("usage unavailable: %s", err)
        usage = None
    history = usage_card.daily_history(r, held, now, account.id)
    tier = tiers.get(account.tier)
    return {
        "usage": usage,
        "resets_at": datetime.fromisoformat(usage["resets_at"]) if usage else None,
        "sandbox_resets_at": datetime.fromisoformat(usage["sandbox"]["resets_at"]) if usage else None,
        "chart": charts.daily_chart(history),
        "tier": tier,
        "card_version": _card_version(usage, history, tier.label),
    }


_CARD_TEMPLATES = ("developer/_usage.html", "developer/_chart.html")
_card_templates_digest: str | None = None


def _card_version(*shown) -> str:
    """A digest of everything the usage card shows, and of its templates: the card's poll sends the
    version it shows, and an unchanged card is answered 204 (htmx swaps nothing) without a render."""
    global _card_templates_digest
    if _card_templates_digest is None:
        env = current_app.jinja_env
        sources = "".join(env.loader.get_source(env, name)[0] for name in _CARD_TEMPLATES)
        _card_templates_digest = hashlib.sha256(sources.encode()).hexdigest()
    figures = json.dumps([_card_templates_digest, *shown], sort_keys=True, default=str)
    return hashlib.sha256(figures.encode()).hexdigest()[:24]


def dashboard_fragments(account, now: datetime, **shown_in_panel) -> dict[str, Fragment]:
    """/developer/api-keys by fragment, always for the signed-in account only."""
    return {
        "key-panel": ("developer/_key_panel.html", lambda: key_panel_context(account, now) | shown_in_panel),
        "usage": ("developer/_usage.html", lambda: usage_context(account, now)),
        "key-events": ("developer/_events.html", lambda: {"events": keys.audit_trail(account.id, limit=20)}),
    }


# The Overview checklist's steps: what each says, and where it is done.
CHECKLIST = {
    "confirm-email": (
        "Confirm your email",
        "Open the link we mailed you; keys need a confirmed address.",
        "portal.account_settings",
    ),
    "create-key": ("Create an API key", "It is shown once: keep it in a secret store.", "portal.api_keys"),
    "sandbox-call": (
        "Make a sandbox call",
        "Any call under /api/sandbox/v1: mock data, free.",
        "portal.guide_getting_started",
    ),
    "first-job": (
        "Submit a job and poll it",
        "POST /jobs, then GET /jobs/{job_id} until it finishes.",
        "portal.guide_getting_started",
    ),
    "webhook-endpoint": (
        "Add a webhook endpoint",
        "Get job.succeeded and friends pushed to you, signed.",
        "webhooks.index",
    ),
    "live-call": (
        "Make a live call",
        "Drop /sandbox from the path: the call counts against your quota.",
        "portal.guide_getting_started",
    ),
}


def overview_context(account, now: datetime) -> dict:
    """The signed-in Overview: key, usage against the quota, errors, recent calls, webhooks, next steps."""
    usage = usage_context(account, now)
    calls_used = usage["usage"]["calls_used"] if usage["usage"] else 0
    done = onboarding.steps(_redis(), account, now, calls_this_period=calls_used)
    endpoints = db.session.scalars(sa.select(WebhookEndpoint).where(WebhookEndpoint.account_id == account.id)).all()
    deliveries = webhook_service.deliveries_of(account.id, limit=50) if endpoints else []
    return {
        **usage,
        "active": keys.active_key(account.id),
        "calls": requestlog.summary(account.id, now),
        "retention_days": requestlog.RETENTION.days,
        "steps": [(step, *CHECKLIST[step.id]) for step in done],
        "next_step": next((step.id for step in done if not step.done), None),
        "endpoints": endpoints,
        "failing_endpoints": [e for e in endpoints if e.failing_since or e.disabled_at],
        "deliveries_failed": sum(1 for d in deliveries if d.status == "failed"),
        "last_delivery": deliveries[0] if deliveries else None,
    }


@bp.get("/developer")
def developer():
    if current_user.is_authenticated:
        return render_template("developer/dashboard.html", **overview_context(current_user, utcnow()))
    examples = snippets.examples(current_app.config["PUBLIC_BASE_URL"])  # pinned, not the request's Host
    quick_start = next(e for e in examples if e.operation_id == "sandbox_create_job")
    return render_template("developer/overview.html", quick_start=quick_start)


@bp.get("/developer/api-keys")
@login_required
def api_keys():
    return page_or_fragment("developer/api_keys.html", dashboard_fragments(current_user, utcnow()))


@bp.get("/developer/usage")
@login_required
def usage_page():
    """This period's calls against the quota, today's sandbox calls and the last 30 days."""
    build = lambda: usage_context(current_user, utcnow())  # noqa: E731
    return page_or_fragment("developer/usage.html", {"usage": ("developer/_usage.html", build)})


@bp.get("/developer/api-keys/usage")
@login_required
def usage():
    """The usage card's own poll: only its fragment, never the whole dashboard."""
    if not request.htmx:
        return redirect(url_for("portal.api_keys"))
    context = usage_context(current_user, utcnow())
    if request.args.get("v") == context["card_version"]:
        return "", 204  # what the page shows is current: htmx swaps nothing
    return render_template("developer/_usage.html", **context)


# ---- key create / roll / revoke: the panel answers with itself --------------------------------

key_actions = Blueprint("keys", __name__)


def _key_panel(status: int = 200, **shown):
    """The key panel (the whole page without htmx) with what the action has to say.

    htmx swaps only 2xx answers, so a refusal reaches htmx as 200 and shows in the panel; a
    browser without JavaScript gets the real status. Every answer shows the keys as they are now
    (a refusal too: a stale tab learns of a key made elsewhere), so the fragments that show
    their state are told to refresh."""
    body = page_or_fragment("developer/api_keys.html", dashboard_fragments(current_user, utcnow(), **shown))
    response = htmx_flask.make_response(body, 200 if request.htmx else status, trigger=KEY_CHANGED)
    response.headers["Cache-Control"] = "no-store"  # it may hold a raw key, shown once
    return response


def _actor() -> keys.Actor:
    return keys.Actor(email=current_user.email, ip=request.remote_addr, user_agent=request.headers.get("User-Agent"))


@key_actions.post("/developer/api-keys/new")
@login_required
@creation_limit.limited
def create():
    """Create the first key or roll the active one; the raw key is shown in this answer only."""
    grace_seconds = request.form.get("grace_period_seconds", 0, type=int)
    if grace_seconds not in dict(GRACE_CHOICES):
        return _key_panel(400, notice=("error", "Choose how long the old key keeps working."))
    try:
        accounts.require_confirmed(current_user)
        issued = keys.issue(current_user, _actor(), timedelta(seconds=grace_seconds))
    except problems.Problem as err:
        return _key_panel(err.status, notice=("error", err.detail))
    return _key_panel(201, new_key=issued.raw)


@key_actions.post("/developer/api-keys/revoke")
@login_required
def revoke():
    revoked = keys.revoke(current_user, _actor())
    if revoked is None:
        return _key_panel(404, notice=("error", "This account has no active key."))
    then = next_key(
        creation_limit.next_creation_at(current_user.id),
        creation_limit.next_emergency_at(current_user.id),
        revoked=True,
    )
    return _key_panel(notice=("ok", f"Key {revoked.hint} is revoked: calls with it now fail. {then}"))


# ---- the emergency replacement of a leaked key: a fresh log-in, then at once -----------------------


def _replace_page(status: int = 200, notice: tuple[str, str] | None = None):
    """What "Replace now" will do, and its button (or why not today)."""
    now = utcnow()
    ring = keys.key_ring(current_user.id, now)
    page = render_template(
        "developer/replace_key.html",
        active=ring.active,
        expiring=ring.expiring,
        next_creation=creation_limit.next_creation_at(current_user.id),
        next_emergency=creation_limit.next_emergency_at(current_user.id),
        emergency_after_this=creation_limit.emergency_after_spending(now),
        may_create_keys=accounts.may_create_keys(current_user),
        notice=notice,
        now=now,
    )
    response = htmx_flask.make_response(page, status)
    response.headers["Cache-Control"] = "no-store"
    return response


@key_actions.get("/developer/api-keys/replace")
@login_required
@fresh_log_in_required(back_to="portal.keys.replace_form")
def replace_form():
    return _replace_page()


@key_actions.post("/developer/api-keys/replace")
@login_required
@fresh_log_in_required(back_to="portal.keys.replace_form")  # before the limit: a stale session spends nothing
@creation_limit.emergency_limited
def replace():
    """Revoke every usable key at once and issue a new one, beside the daily creation limit."""
    try:
        accounts.require_confirmed(current_user)
        issued = keys.replace_at_once(current_user, _actor())
    except problems.Problem as err:
        return _replace_page(err.status, notice=("error", err.detail))
    text = (
        "Replaced: the previous key stopped working at once, and this emergency replacement is in the"
        " key activity. Your new key is below."
    )
    return _key_panel(201, new_key=issued.raw, notice=("ok", text))


@key_actions.errorhandler(RateLimitExceeded)
def _creation_limited(exc: RateLimitExceeded):
    if request.endpoint == "portal.keys.replace":
        again = creation_limit.next_emergency_at(current_user.id)
        # The page goes on to say when the next one is possible (the limit's own window).
        text = "You have already replaced a key in an emergency today: that is possible once a day."
        response = _replace_page(429, notice=("warn", text))
    else:
        # The panel shows when the shared daily limit lets this account create a key again.
        response = _key_panel(429, notice=("warn", "You can create or roll a key once a day."))
        again = creation_limit.next_creation_at(current_user.id)
    if again is not None:
        response.headers["Retry-After"] = str(max(1, int((again - utcnow()).total_seconds())))
    return response


bp.register_blueprint(key_actions)
