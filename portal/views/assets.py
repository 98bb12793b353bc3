"""Front-end assets from npm (installed by `make setup`), served by the app itself, plus the
security headers every portal page carries."""

import re
from pathlib import Path

from flask import abort, current_app, request, send_from_directory

from levqor_core.web.api_paths import is_api_path

from . import bp

NODE_MODULES = Path(__file__).resolve().parents[2] / "node_modules"

# Only these files are served: node_modules holds much more than the portal needs.
VENDOR = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
}

# `no-store` as a directive of its own (RFC 9111 5.2.2.5), not `no-store=...`.
NO_STORE = re.compile(r"(?:^|,)\s*no-store\s*(?:,|$)", re.IGNORECASE)

# No inline scripts or styles anywhere: the portal's JavaScript lives in static files.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


@bp.get("/vendor/<name>")
def vendor(name: str):
    relative = VENDOR.get(name)
    if relative is None:
        abort(404)
    path = NODE_MODULES / relative
    if not path.is_file():
        current_app.logger.error("missing front-end asset %s: run `make setup` (npm ci)", path)
        abort(404)
    return send_from_directory(path.parent, path.name, max_age=3600)


@bp.after_app_request
def security_headers(response):
    # The API's own responses (JSON, problem+json) get theirs at the edge (levqor_core.web.request_guard).
    if not is_api_path(request.path):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if response.mimetype == "text/html":
            # Pages show account data: keep them out of shared caches and the back-forward cache.
            # Checked, not only defaulted: a `no-store=True` (Werkzeug 3.1 writing a directive set
            # to True item by item) is not no-store to a browser (docs/security/hardening-round-2.md).
            if not NO_STORE.search(response.headers.get("Cache-Control", "")):
                response.headers["Cache-Control"] = "no-store"
            response.vary.add("HX-Request")
    return response
