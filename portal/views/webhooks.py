"""/developer/webhooks: the signed-in developer's webhook endpoints (live and sandbox), the form
that creates one (its secret shown in that answer only), and each endpoint's delivery log with
"Send test event" and "Resend".

The rules live in levqor_core.webhooks.service; these views parse the form, call it, and answer
htmx with the fragment that changed (a plain form post gets the page, or a redirect back to it).
"""

from datetime import timedelta

import htmx_flask
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user

from levqor_core import problems
from levqor_core.columns import utcnow
from levqor_core.web.session_limit import portal_limited
from levqor_core.webhooks import listening
from levqor_core.webhooks import service as webhooks
from levqor_core.webhooks.models import DeliveryStatus

from ..helpers import snippets
from ._render import Fragment, login_required, page_or_fragment

bp = Blueprint("webhooks", __name__)

# The endpoint list listens for it (hx-trigger="webhooks-changed from:body").
WEBHOOKS_CHANGED = "webhooks-changed"
LOG_LENGTH = 20  # deliveries shown per endpoint, newest first
SOON = timedelta(minutes=1)


SIDES = (("Live", False), ("Sandbox", True))
STREAMS = "levqor.streams"  # levqor_core.web.streams.EXTENSION: its settings (the heartbeat)


def _sides(account_id: int) -> list[tuple[str, bool, list]]:
    """(label, sandbox, endpoints) for the live and the sandbox side."""
    return [(label, sandbox, webhooks.endpoints_of(account_id, sandbox)) for label, sandbox in SIDES]


def _log_context(endpoint, notice=None) -> dict:
    deliveries = webhooks.deliveries_of(endpoint.account_id, endpoint.id, limit=LOG_LENGTH)
    pending = [d for d in deliveries if d.status == DeliveryStatus.PENDING]
    soon = utcnow() + SOON
    return {
        "endpoint": endpoint,
        "deliveries": deliveries,
        "pending": bool(pending),
        # Briskly while an attempt is (nearly) due; a retry hours away needs no 2 s poll.
        "poll_seconds": 2 if any(d.next_attempt_at and d.next_attempt_at <= soon for d in pending) else 30,
        "notice": notice,
        "length": LOG_LENGTH,
    }


def _form_context(**shown) -> dict:
    return {
        "event_types": webhooks.EVENT_TYPES,
        # One line under each checkbox: the spec's own summary of the event (x-webhooks).
        "event_summaries": {event["type"]: event["summary"] for event in snippets.webhook_events()},
        "form": shown.pop("form", {"events": list(webhooks.JOB_EVENTS), "mode": "live"}),
        **shown,
    }


def _fragments(account_id: int, **shown_in_form) -> dict[str, Fragment]:
    return {
        "webhook-create": ("webhooks/_create.html", lambda: _form_context(**shown_in_form)),
        "webhook-endpoints": (
            "webhooks/_endpoints.html",
            lambda: {"sides": _sides(account_id), "log_of": _log_context},
        ),
        "webhook-listening": ("webhooks/_listening.html", lambda: {"sessions": _listening(account_id)}),
    }


def _listening(account_id: int) -> list:
    """The account's open listening sessions (one silent for three heartbeats has ended)."""
    return listening.active_sessions(account_id, current_app.extensions[STREAMS].stale_after)


@bp.get("/developer/webhooks")
@login_required
def index():
    return page_or_fragment("webhooks/index.html", _fragments(current_user.id))


@bp.post("/developer/webhooks")
@login_required
@portal_limited
def create():
    """Create an endpoint; its secret is in this answer and nowhere else, ever."""
    form = {
        "url": request.form.get("url", "").strip(),
        "events": request.form.getlist("events"),
        "mode": request.form.get("mode", "live"),
    }
    status, shown = 201, {}
    try:
        endpoint, secret = webhooks.create_endpoint(
            current_user,
            form["url"],
            form["events"],
            sandbox=form["mode"] == "sandbox",
            secret_key=current_app.config["SECRET_KEY"],
            allow_private=current_app.config["WEBHOOK_ALLOW_PRIVATE_TARGETS"],
        )
        shown = {"created": endpoint, "secret": secret}
    except problems.Problem as refused:  # a private URL, the cap, no event chosen: said in the form
        status, shown = refused.status, {"error": refused.detail, "form": form}
    body = page_or_fragment("webhooks/index.html", _fragments(current_user.id, **shown))
    # htmx swaps only 2xx answers: a refusal reaches it as 200 and shows in the form.
    response = htmx_flask.make_response(body, 200 if request.htmx else status, trigger=WEBHOOKS_CHANGED)
    response.headers["Cache-Control"] = "no-store"  # it may hold the secret, shown once
    return response


def _owned_endpoint(endpoint_id: str):
    try:
        return webhooks.owned(current_user.id, endpoint_id, sandbox=None)
    except problems.NotFound:
        abort(404)  # another account's endpoint is not told apart from none


def _back_to_page():
    return redirect(url_for("webhooks.index"), 303)


@bp.post("/developer/webhooks/<endpoint_id>/delete")
@login_required
@portal_limited
def delete(endpoint_id: str):
    webhooks.delete_endpoint(_owned_endpoint(endpoint_id))
    if not request.htmx:
        return _back_to_page()
    return render_template("webhooks/_endpoints.html", sides=_sides(current_user.id), log_of=_log_context)


@bp.get("/developer/webhooks/<endpoint_id>/deliveries")
@login_required
def deliveries(endpoint_id: str):
    """One endpoint's delivery log: it polls this route itself while a delivery is pending."""
    if not request.htmx:
        return _back_to_page()
    return render_template("webhooks/_deliveries.html", log=_log_context(_owned_endpoint(endpoint_id)))


@bp.post("/developer/webhooks/<endpoint_id>/test")
@login_required
@portal_limited
def send_test(endpoint_id: str):
    endpoint = _owned_endpoint(endpoint_id)
    notice = None
    try:
        webhooks.send_test(endpoint)
    except problems.Conflict as refused:  # a disabled endpoint, or a test event still pending
        notice = refused.detail
    if not request.htmx:
        return _back_to_page()
    return render_template("webhooks/_deliveries.html", log=_log_context(endpoint, notice))


@bp.post("/developer/webhooks/deliveries/<delivery_id>/resend")
@login_required
@portal_limited
def resend(delivery_id: str):
    try:
        delivery = webhooks.delivery_of(current_user.id, delivery_id)
    except problems.NotFound:
        abort(404)
    notice = None
    try:
        webhooks.redeliver(delivery)
    except problems.Conflict as refused:  # still pending: its next attempt is already coming
        notice = refused.detail
    if not request.htmx:
        return _back_to_page()
    return render_template("webhooks/_deliveries.html", log=_log_context(delivery.endpoint, notice))
