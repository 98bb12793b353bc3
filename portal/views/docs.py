"""/docs: the API reference (Swagger UI + generated example calls) and the SDK guide with Run."""

import json
import logging
from pathlib import Path

import htmx_flask
import redis
from flask import current_app, render_template, request
from flask_login import current_user
from markdown_it import MarkdownIt
from markupsafe import Markup

from levqor_core import problems

from ..helpers import sandbox_calls as portal_sandbox
from ..helpers import sdk_examples, snippets
from . import bp

log = logging.getLogger(__name__)


@bp.get("/docs")
def docs():
    return api_docs()


@bp.get("/docs/api")
def api_docs():
    examples = snippets.examples(current_app.config["PUBLIC_BASE_URL"])
    return render_template("docs/api.html", groups=snippets.by_tag(examples), webhook_events=snippets.webhook_events())


CHANGELOG = Path(__file__).resolve().parents[2] / "openapi" / "CHANGELOG.md"


@bp.get("/docs/changelog")
def changelog():
    """openapi/CHANGELOG.md as a page: each API version, its date and its changes."""
    # CommonMark with raw HTML off: the file is ours, but what it holds is shown as text.
    text = CHANGELOG.read_text(encoding="utf-8")
    if text.startswith("# "):  # the file's title; the page has its own heading
        text = text.partition("\n")[2]
    html = MarkdownIt("commonmark", {"html": False}).render(text)
    safe = Markup(html)  # noqa: S704 -- markdown-it escapes any HTML in the text (html: False)
    return render_template("docs/changelog.html", changelog=safe, api_version=current_app.config["API_VERSION"])


# Where `make sdk-publish` puts the SDKs, tagged v<info.version>; no package registry holds them.
# The same URL is the packageUrl / gitUserId+gitRepoId in sdk-gen/python and sdk-gen/node config.yaml.
SDK_REPOSITORY = "https://github.com/levqor/levqor-sdk"


def _sdk_page(**context):
    api_base = current_app.config["PUBLIC_BASE_URL"] + "/api"  # pinned: the Host header is the client's
    return render_template(
        "docs/sdk.html",
        examples=sdk_examples.rendered(api_base),
        sdk_repository=SDK_REPOSITORY,
        sdk_version=current_app.config["API_VERSION"],
        **context,
    )


@bp.get("/docs/sdk")
def sdk_docs():
    return _sdk_page()


@bp.post("/docs/sdk/run")
def sdk_run():
    """Run an example's call in the sandbox as the signed-in developer; show the live answer."""
    example = sdk_examples.BY_ID.get(request.form.get("example", ""))
    result = {"example_id": example.id if example else request.form.get("example", "")}
    status = 200
    if example is None:
        result["problem"] = problems.NotFound("There is no such example on this page.")
        status = 404
    elif not current_user.is_authenticated:
        result["problem"] = problems.NotAuthenticated("Log in to run examples against the sandbox.")
        status = 401
    else:
        try:
            call = portal_sandbox.run(current_app.extensions["levqor.redis"], current_user, example.operation_id)
        except problems.Problem as problem:
            result["problem"] = problem
            status = problem.status
        except redis.RedisError as err:
            log.warning("sandbox unavailable: %s", err)
            result["problem"] = problems.ServiceUnavailable(
                "The sandbox is unavailable for a moment; try again shortly."
            )
            status = 503
        else:
            result["call"] = call
            result["body_json"] = json.dumps(call.body, indent=2)
    if request.htmx:
        # Refusals are answers too: sent as 200 so htmx swaps them in where the result goes; the
        # page's usage meter refreshes.
        return htmx_flask.make_response(
            render_template("docs/_run_result.html", result=result), trigger="usage-changed"
        )
    return _sdk_page(run=result), status
