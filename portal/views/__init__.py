"""The portal's views, one module per area: the `portal` blueprint (auth, developer, docs,
pricing, assets) and the billing, ops and webhooks areas' own blueprints (`billing.py`, `ops.py`,
`webhooks.py`).

Every view renders a whole page, or only the fragment named by htmx's HX-Target header when the
request comes from htmx (htmx-flask's `request.htmx`), from the same code.
"""

from flask import Blueprint

from levqor_core.web.api_paths import is_api_path

from ..helpers import formats

bp = Blueprint("portal", __name__, static_folder="../static", static_url_path="/assets")

# The modules register their routes on `bp`; imported after it exists.
from . import account, assets, auth, developer, docs, logs, pricing, status  # noqa: E402, F401


@bp.app_context_processor
def _portal_globals() -> dict:
    from flask import current_app

    from levqor_core import tiers
    from levqor_core.accounts import service as accounts

    return {
        # Other areas (billing, ops) register their own blueprints; link to them only when present.
        "has_endpoint": lambda name: name in current_app.view_functions,
        "default_tier": tiers.TIERS[tiers.DEFAULT_TIER],
        "sandbox_daily_limit": tiers.SANDBOX_DAILY_LIMIT,
        "min_password": accounts.MIN_PASSWORD,
    }


bp.add_app_template_filter(formats.when, "when")
bp.add_app_template_filter(formats.duration, "duration")


@bp.app_errorhandler(404)
def _not_found(exc):
    """A readable page for a mistyped portal address; the API keeps its problem+json."""
    from flask import render_template, request

    from levqor_core import problems

    if is_api_path(request.path):
        return problems.NotFound(exc.description).flask_response()
    message = "There is no page at this address. It may have moved, or the link may be mistyped."
    return render_template("errors/message.html", title="Page not found", message=message), 404


@bp.app_errorhandler(405)
def _method_not_allowed(exc):
    """A readable page naming the methods the address takes, in `Allow` (RFC 9110 15.5.6): Connexion
    turned Flask's 405 into a body with no headers."""
    from flask import render_template

    message = "This address does not take that kind of request. Go back and use the page's own buttons."
    page = render_template("errors/message.html", title="Not allowed here", message=message)
    return page, 405, {"Allow": ", ".join(sorted(exc.valid_methods or ()))}
