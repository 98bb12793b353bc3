"""/docs: the docs site. A left navigation (guides, then the reference by tag), the guides
(Markdown in portal/guides/), the API reference rendered from the spec with our own try-it, the
SDK page with Run, and the changelog for developers."""

import io
import json
import logging
import re
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import htmx_flask
import redis
import yaml
from flask import abort, current_app, render_template, request, send_file, url_for
from flask_login import current_user
from markdown_it import MarkdownIt
from markupsafe import Markup
from mdit_py_plugins.anchors import anchors_plugin

from levqor_core import problems, redis_conn

from ..helpers import docs_search, reference, sdk_examples, sdk_packages, snippets
from ..helpers import sandbox_calls as portal_sandbox
from . import bp

log = logging.getLogger(__name__)

# CommonMark with tables, raw HTML off: what the files and the spec hold is shown as text.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
# The guides' ## and ### headings get ids (`## Backoff` → `#backoff`): links into a guide, and
# where the docs search sends a reader (helpers/docs_search reads the same ids).
_GUIDE_MARKDOWN = (
    MarkdownIt("commonmark", {"html": False}).enable("table").use(anchors_plugin, min_level=2, max_level=3)
)
GUIDES_DIR = Path(__file__).resolve().parents[1] / "guides"


def markdown(text: str) -> Markup:
    # A code block scrolls sideways on a phone: it takes focus so a keyboard can scroll it too.
    rendered = _MARKDOWN.render(text).replace("<pre><code", '<pre tabindex="0"><code')
    return Markup(rendered)  # noqa: S704 -- markdown-it escapes any HTML (html: False)


def markdown_inline(text: str) -> Markup:
    return Markup(_MARKDOWN.renderInline(text or ""))  # noqa: S704 -- as above


bp.add_app_template_filter(markdown, "markdown")
bp.add_app_template_filter(markdown_inline, "markdown_inline")


@dataclass(frozen=True)
class Guide:
    slug: str
    title: str
    summary: str
    order: int
    body: str  # Markdown


@cache
def guides() -> list[Guide]:
    """portal/guides/*.md, each a front matter (title, summary, order) and a Markdown body."""
    found = []
    for path in GUIDES_DIR.glob("*.md"):
        _, front, body = path.read_text(encoding="utf-8").split("---\n", 2)
        meta = yaml.safe_load(front)
        found.append(Guide(path.stem, meta["title"], meta["summary"], int(meta["order"]), body))
    return sorted(found, key=lambda g: g.order)


def _guide_text(guide: Guide, base_url: str) -> str:
    """The guide's Markdown with this server's address and limits in its examples."""
    from levqor_core import tiers

    return guide.body.replace("$BASE", base_url).replace("{sandbox_daily_limit}", str(tiers.SANDBOX_DAILY_LIMIT))


def _guide_url(guide: Guide) -> str:
    if guide.slug == "getting-started":
        return url_for("portal.guide_getting_started")
    return url_for("portal.guide", slug=guide.slug)


def _guide_html(guide: Guide) -> Markup:
    rendered = _GUIDE_MARKDOWN.render(_guide_text(guide, current_app.config["PUBLIC_BASE_URL"]))
    return _with_copy_buttons(rendered.replace("<pre><code", '<pre tabindex="0"><code'))


def _with_copy_buttons(rendered: str) -> Markup:
    """Each code block of a guide gets the portal's Copy button (portal.js copies its code's text)."""
    count = iter(range(1, 1000))

    def wrap(match: re.Match) -> str:
        n = next(count)
        button = (
            '<button type="button" class="btn btn-small btn-copy" '
            f'data-copy="#snippet-{n}" aria-label="Copy this code">Copy</button>'
        )
        return f'<div class="code-block">{button}<pre tabindex="0"><code id="snippet-{n}"{match.group(1)}>'

    wrapped = re.sub(r'<pre tabindex="0"><code((?: class="[^"]*")?)>', wrap, rendered).replace(
        "</code></pre>", "</code></pre></div>"
    )
    return Markup(wrapped)  # noqa: S704 -- markdown-it's escaped output, with our own tags only


def _docs_context() -> dict:
    return {
        "guides": guides(),
        "reference_tags": reference.tags(current_app.config["PUBLIC_BASE_URL"]),
        "max_chars": docs_search.MAX_QUERY_CHARS,
    }


@bp.get("/docs")
def docs():
    return render_template("docs/index.html", **_docs_context())


@bp.get("/docs/getting-started")
def guide_getting_started():
    return guide("getting-started")


@bp.get("/docs/guides/<slug>")
def guide(slug: str):
    found = next((g for g in guides() if g.slug == slug), None)
    if found is None:
        abort(404)
    ordered = guides()
    at = ordered.index(found)
    return render_template(
        "docs/guide.html",
        guide=found,
        body=_guide_html(found),
        previous=ordered[at - 1] if at > 0 else None,
        next=ordered[at + 1] if at + 1 < len(ordered) else None,
        **_docs_context(),
    )


@bp.get("/docs/api")
def api_docs():
    """The reference: each public operation once, in three columns, with curl / Python / Node and
    a try-it that calls the sandbox with a key pasted into this page (kept in the page's memory)."""
    return render_template(
        "docs/api.html", intro=reference.intro(), webhook_events=snippets.webhook_events(), **_docs_context()
    )


CHANGELOG = Path(__file__).resolve().parents[2] / "openapi" / "CHANGELOG.md"
_VERSION = re.compile(r"^## (\d+)\.(\d+)\.(\d+) \((.+)\)$", re.M)


@dataclass(frozen=True)
class Release:
    version: str
    date: str  # YYYY-MM-DD, or "" while unreleased
    what_to_do: str
    body: Markup
    source: str  # the release's Markdown


def releases(text: str) -> list[Release]:
    """openapi/CHANGELOG.md by version, newest first, without its preamble for maintainers; each
    with what a caller has to do, from the kind of version it is (semantic versioning)."""
    found, heads = [], list(_VERSION.finditer(text))
    previous = [tuple(int(x) for x in h.groups()[:3]) for h in heads[1:]] + [None]
    for head, before in zip(heads, previous, strict=True):
        end = text.find("\n## ", head.end())
        body = text[head.end() : end if end != -1 else len(text)]
        major, minor, patch = (int(x) for x in head.groups()[:3])
        if before is None:
            todo = "The first release."
        elif major != before[0]:
            todo = "Breaking changes: read each one below before you upgrade your code and SDK."
        elif minor != before[1]:
            todo = "Additions only: nothing to change. Update your SDK to use what is new."
        else:
            todo = "Fixes to wording and examples: nothing to change."
        date = head.group(4) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", head.group(4)) else ""
        found.append(Release(f"{major}.{minor}.{patch}", date, todo, markdown(body.replace("\n### ", "\n#### ")), body))
    return found


@bp.get("/docs/changelog")
def changelog():
    """What changed in each version of the API, for callers."""
    text = CHANGELOG.read_text(encoding="utf-8")
    return render_template(
        "docs/changelog.html",
        releases=releases(text),
        api_version=current_app.config["API_VERSION"],
        **_docs_context(),
    )


_SEARCH_INDEXES: dict[str, docs_search.Index] = {}
_SEARCH_INDEX_BUILD = threading.Lock()


def _search_index(base_url: str) -> docs_search.Index:
    """Built once per process (and public base URL), from what the docs pages render. The first
    searches to arrive together wait for one build (~1 s of CPU) instead of each making its own."""
    index = _SEARCH_INDEXES.get(base_url)
    if index is None:
        with _SEARCH_INDEX_BUILD:
            index = _SEARCH_INDEXES.get(base_url)
            if index is None:
                sections = docs_search.build_sections(
                    _GUIDE_MARKDOWN,
                    [(g.title, _guide_url(g), _guide_text(g, base_url)) for g in guides()],
                    base_url,
                    releases(CHANGELOG.read_text(encoding="utf-8")),
                )
                index = _SEARCH_INDEXES[base_url] = docs_search.Index(sections)
    return index


@bp.get("/docs/search")
def docs_search_page():
    """Search the guides, the reference, the webhook events and the changelog. A whole page for a
    form submitted without JavaScript; as the reader types, htmx asks for the results only."""
    results = _search_index(current_app.config["PUBLIC_BASE_URL"]).search(request.args.get("q", ""))
    if request.htmx and request.htmx.target == "search-results":
        return render_template("docs/_search_results.html", results=results)
    return render_template("docs/search.html", results=results, **_docs_context()), 400 if results.error else 200


# Where `make sdk-publish` puts the SDKs, tagged v<info.version>; no package registry holds them.
# The same URL is the packageUrl / gitUserId+gitRepoId in sdk-gen/python and sdk-gen/node config.yaml.
SDK_REPOSITORY = "https://github.com/levqor/levqor-sdk"


def _sdk_page(**context):
    api_base = current_app.config["PUBLIC_BASE_URL"] + "/api"  # pinned: the Host header is the client's
    return render_template(
        "docs/sdk.html",
        examples=sdk_examples.rendered(api_base),
        sdk_version=current_app.config["API_VERSION"],
        sdk_repository=SDK_REPOSITORY,
        packages=_packages(),
        public_base=current_app.config["PUBLIC_BASE_URL"],
        **_docs_context(),
        **context,
    )


@bp.get("/docs/sdk")
def sdk_docs():
    return _sdk_page()


def _packages() -> dict[str, sdk_packages.Package]:
    """The SDKs this server can hand out: the ones `make sdk` built for the API version it runs."""
    found = sdk_packages.built(current_app.config.get("SDK_BUILD_DIR"))
    return {lang: p for lang, p in found.items() if p.version == current_app.config["API_VERSION"]}


@bp.get("/sdk/<language>/<filename>")
def sdk_download(language: str, filename: str):
    """A package `make sdk` generated, for `pip install <url>` / `npm install <url>`."""
    package = _packages().get(language)
    if package is None or package.filename != filename:
        abort(404)
    response = send_file(
        io.BytesIO(sdk_packages.archive(package)), mimetype="application/gzip", download_name=filename, max_age=300
    )
    return response


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
            call = portal_sandbox.run(redis_conn.for_limits(), current_user, example.operation_id)
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
