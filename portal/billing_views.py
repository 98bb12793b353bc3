"""Portal billing pages: upgrade through Stripe Checkout, the plan page, and Stripe's customer portal."""

from flask import Blueprint, redirect, render_template, request
from flask_login import current_user, login_required

from levqor import billing, problems, tiers
from levqor.models import utcnow

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


@bp.post("/billing/upgrade")
@login_required
def upgrade():
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
