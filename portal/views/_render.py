"""One view, two shapes: the whole page for a browser, one fragment for htmx."""

from flask import render_template, request


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def page_or_fragment(page: str, fragments: dict[str, str], **context) -> str:
    """Render `page`, or the fragment whose root id htmx sent as HX-Target."""
    if is_htmx():
        template = fragments.get(request.headers.get("HX-Target", ""))
        if template:
            return render_template(template, **context)
    return render_template(page, **context)
