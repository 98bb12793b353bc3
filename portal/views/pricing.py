"""/pricing: the tier comparison, read from the one tier table."""

from flask import render_template
from flask_login import current_user

from levqor_core import tiers
from levqor_core.billing import is_configured as billing_configured

from . import bp

# The billing module owns this route (Stripe Checkout); the form only posts to it.
UPGRADE_PATH = "/billing/upgrade"


@bp.get("/pricing")
def pricing():
    current = current_user.tier if current_user.is_authenticated else None
    return render_template(
        "pricing/pricing.html",
        tiers=list(tiers.TIERS.values()),
        current=current,
        upgrade_path=UPGRADE_PATH,
        sandbox_daily=tiers.SANDBOX_DAILY_LIMIT,
        # Without Stripe the paid plans cannot be bought here: say so, as /developer/billing does.
        billing_configured=billing_configured(),
    )
