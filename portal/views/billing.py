"""Portal billing pages: upgrade through Stripe Checkout, the plan page, and Stripe's customer portal."""

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from levqor_core import billing, problems, tiers
from levqor_core.columns import utcnow

from ._render import login_required

bp = Blueprint("billing", __name__)

_CHECKOUT_NOTICES = {
    "success": "Thanks! Your payment is being confirmed; your plan changes as soon as Stripe tells us.",
    "canceled": "Checkout was cancelled; nothing was charged.",
}


def _refused(err: problems.Problem):
    titles = {
        billing.UnknownPlan: "Choose a plan",
        billing.AlreadySubscribed: "You already have a plan",
        billing.NoBillingAccount: "Nothing to manage yet",
        billing.BillingNotConfigured: "Billing is unavailable",
        billing.PaymentProviderError: "Stripe did not answer",
    }
    title = next((t for kind, t in titles.items() if isinstance(err, kind)), "Billing problem")
    return render_template("errors/message.html", title=title, message=err.detail), err.status


@bp.get("/developer/billing")
@login_required
def overview():
    return render_template(
        "billing/overview.html",
        billing=billing.billing_status(current_user, utcnow()),
        paid_tiers=[t for t in tiers.TIERS.values() if t.price_usd],
        notice=_CHECKOUT_NOTICES.get(request.args.get("checkout", "")),
        configured=billing.is_configured(),
    )


@bp.get("/billing/upgrade")
@login_required
def confirm_upgrade():
    """Where log-in and sign-up return a visitor who chose a plan: confirm it, then POST to Checkout."""
    try:
        tier = billing.paid_tier(request.args.get("tier"))
    except billing.UnknownPlan:
        return redirect(url_for("billing.overview"))
    return render_template(
        "billing/upgrade.html",
        tier=tier,
        billing=billing.billing_status(current_user, utcnow()),
        configured=billing.is_configured(),
    )


@bp.post("/billing/upgrade")
def upgrade():
    if not current_user.is_authenticated:
        # The chosen tier is in the form body, which a log-in redirect would drop (and the
        # redirect back is a GET): carry it in the query to the confirm page instead.
        tier = request.form.get("tier")
        label = tiers.TIERS[tier].label if tier in tiers.TIERS else None
        flash(f"Log in or create an account to upgrade to {label}." if label else "Log in to upgrade.")
        return redirect(url_for("security.login", next=url_for("billing.confirm_upgrade", tier=tier)), code=303)
    try:
        url = billing.start_checkout(current_user, request.form.get("tier"))
    except problems.Problem as err:
        return _refused(err)
    return redirect(url, code=303)


@bp.post("/billing/manage")
@login_required
def manage():
    try:
        url = billing.portal_url(current_user)
    except problems.Problem as err:
        return _refused(err)
    return redirect(url, code=303)
