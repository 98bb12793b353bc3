"""Search over the docs site: the guides by section, every public operation of the reference, the
webhook events, the SDK page and the changelog's releases.

The index is lunr's (lunr.py, the Python port of lunr.js: BM25 over stemmed terms), built once per
process and public base URL from the same sources the pages render. A query is split into words
here, never parsed as lunr's query syntax, so `:`, `^`, `~`, `*` or `+` in it are just text.
Every word must match, either as a whole (stemmed, as the index stores it) or as the start of a
word, so a query typed as far as `webh` already finds webhooks."""

import re
from dataclasses import dataclass

from lunr import lunr
from lunr.query import Query
from lunr.stop_word_filter import WORDS as STOP_WORDS
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from . import reference, sdk_examples, snippets

MAX_QUERY_CHARS = 200
MAX_WORDS = 8
MAX_RESULTS = 20
SNIPPET_CHARS = 180

# Characters that join words in code and paths (`create_job`, `/api/v1/jobs/{id}`,
# `job.succeeded`): indexed and searched as spaces, so each part is a word of its own.
_JOINERS = re.compile(r"[/{}()\[\].,:;_=<>\"'`*#|]+")
_WORD = re.compile(r"[^\s\-]+")
_PARAMETER = re.compile(r"\{[^}]*\}")


@dataclass(frozen=True)
class Section:
    ref: str
    kind: str  # Guide | API | Webhook event | SDK | Changelog
    title: str
    context: str  # where it is: the guide's title, the operation's method and path
    url: str
    text: str  # plain text


@dataclass(frozen=True)
class Hit:
    section: Section
    snippet: Markup


@dataclass(frozen=True)
class Results:
    query: str
    hits: list[Hit]  # the best MAX_RESULTS
    error: str = ""
    total: int = 0  # every section that matched


def _normalised(text: str) -> str:
    return _JOINERS.sub(" ", text)


def _inline_text(token) -> str:
    """An inline token's words as a reader sees them: its text and inline code, no markup; a line
    break is a space."""
    return "".join(
        c.content if c.type in ("text", "code_inline") else " "
        for c in token.children or ()
        if c.type in ("text", "code_inline", "softbreak", "hardbreak")
    )


def _joined(parts: list[str]) -> str:
    return " ".join(" ".join(parts).split())


def plain_text(md: MarkdownIt, source: str) -> str:
    """Markdown as the words a reader sees: text, inline code and code blocks, no markup."""
    parts = []
    for token in md.parse(source or ""):
        if token.type == "inline":
            parts.append(_inline_text(token))
        elif token.type in ("fence", "code_block"):
            parts.append(token.content)
    return _joined(parts)


def _guide_sections(md: MarkdownIt, guide_title: str, url: str, text: str) -> list[Section]:
    """A guide's opening (up to its first heading) and each of its ## and ### sections, each with
    the id its heading gets on the page (md carries the same anchors plugin as the page's)."""
    sections, title, anchor, parts = [], guide_title, "", []

    def close():
        if parts or not sections:
            at = f"{url}#{anchor}" if anchor else url
            sections.append(Section(at, "Guide", title, guide_title if anchor else "", at, _joined(parts)))

    tokens = md.parse(text)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.attrGet("id"):
            close()
            anchor, parts, title = token.attrGet("id"), [], _inline_text(tokens[i + 1])
        elif token.type == "inline" and tokens[i - 1].type != "heading_open":
            parts.append(_inline_text(token))
        elif token.type in ("fence", "code_block"):
            parts.append(token.content)
    close()
    return sections


def _operation_text(md: MarkdownIt, op: reference.Operation) -> str:
    words = [op.operation_id, op.method.upper(), op.path, plain_text(md, op.description), op.tag]
    for p in op.params:
        words += [p.name, plain_text(md, p.description)]
    for f in op.body_fields:
        words += [f.name, plain_text(md, f.description)]
    if op.twin:
        words += ["sandbox twin of", op.twin.summary]
    return " ".join(w for w in words if w)


def build_sections(md: MarkdownIt, guides: list[tuple[str, str, str]], base_url: str, releases) -> list[Section]:
    """Every section the search finds; `guides` as (title, URL, Markdown as the page renders it)."""
    found = []
    for title, url, text in guides:
        found += _guide_sections(md, title, url, text)
    for tag in reference.tags(base_url):
        for op in tag.operations:
            found.append(
                Section(
                    ref=f"op-{op.operation_id}",
                    kind="API",
                    title=op.summary,
                    context=f"{op.method.upper()} {op.path}",
                    url=f"/docs/api#op-{op.operation_id}",
                    text=_operation_text(md, op),
                )
            )
    found.append(
        Section(
            "introduction", "API", "Introduction", "API reference", "/docs/api#introduction",
            plain_text(md, reference.intro()),
        )
    )  # fmt: skip
    for event in snippets.webhook_events():
        found.append(
            Section(
                ref=f"event-{event['type']}",
                kind="Webhook event",
                title=event["type"],
                context=event["summary"],
                url=f"/docs/api#event-{event['type']}",
                text=f"{event['type']} {event['summary']} {plain_text(md, event['description'])}",
            )
        )
    found.append(
        Section(
            "sdks", "SDK", "Install the Python and Node SDKs", "SDKs", "/docs/sdk",
            "Typed clients for Python (3.10+, package levqor, pip install) and Node (18+, package "
            "@levqor/sdk, npm install), generated from the OpenAPI spec: retries that honour Retry-After, "
            "typed errors, idempotent job creation, webhook verification. Installed from this server or "
            "from the levqor-sdk repository, not from PyPI or npm.",
        )
    )  # fmt: skip
    for item in sdk_examples.rendered(base_url + "/api"):
        example = item["example"]
        found.append(
            Section(
                ref=f"sdk-{example.id}",
                kind="SDK",
                title=example.title,
                context="Python and Node",
                url=f"/docs/sdk#{example.id}",
                text=f"Python {item['python']} Node {item['node']}",
            )
        )
    for release in releases:
        found.append(
            Section(
                ref=f"v{release.version}",
                kind="Changelog",
                title=f"Version {release.version}",
                context=release.date or "unreleased",
                url=f"/docs/changelog#v{release.version}",
                text=f"{release.what_to_do} {plain_text(md, release.source)}",
            )
        )
    return found


class Index:
    def __init__(self, sections: list[Section]):
        self.sections = {s.ref: s for s in sections}
        self.lunr = lunr(
            ref="ref",
            fields=[{"field_name": "title", "boost": 10}, {"field_name": "context", "boost": 3}, "text"],
            documents=[
                {
                    "ref": s.ref,
                    "title": _normalised(s.title),
                    "context": _normalised(s.context),
                    "text": _normalised(s.text),
                }
                for s in sections
            ],
        )

    def search(self, raw: str) -> Results:
        query = " ".join((raw or "").split())
        if len(query) > MAX_QUERY_CHARS:
            return Results(query[:MAX_QUERY_CHARS], [], f"Search for at most {MAX_QUERY_CHARS} characters.")
        words = [w.lower() for w in _WORD.findall(_normalised(query))]
        if len(words) > MAX_WORDS:
            return Results(query, [], f"Search for at most {MAX_WORDS} words.")
        needed = [w for w in dict.fromkeys(words) if w not in STOP_WORDS]
        if not needed:
            return Results(query, [])
        lunr_query = self.lunr.create_query()
        stems = {}
        for word in needed:
            stems[word] = self.lunr.pipeline.run_string(word) or [word]
            lunr_query.term(word, use_pipeline=True)
            lunr_query.term(word, wildcard=Query.WILDCARD_TRAILING, use_pipeline=False)
        ranked = []
        for found in self.lunr.query(lunr_query):
            matched = set(found["match_data"].metadata)
            # lunr's clauses are alternatives: keep the sections where every word matched.
            if all(any(t in stems[w] or t.startswith(w) for t in matched) for w in needed):
                section = self.sections[found["ref"]]
                ranked.append((-_named(section, query, words), -found["score"], len(ranked), section))
        ranked.sort(key=lambda r: r[:3])
        # Marked in snippets: the words as typed, and their stems (`idempotency` → `idempot` marks
        # "idempotent", which the index matched), unless a stem is too short to mean much.
        marks = sorted({*needed, *(t for w in needed for t in stems[w] if len(t) >= 4)}, key=len, reverse=True)
        hits = [Hit(section, snippet(section.text, marks)) for *_, section in ranked[:MAX_RESULTS]]
        return Results(query, hits, total=len(ranked))


def _words(text: str) -> str:
    return " " + " ".join(_WORD.findall(_normalised(text).lower())) + " "


def _named(section: Section, query: str, words: list[str]) -> int:
    """How directly the section is what was asked for, ahead of lunr's score: 3 when the query is
    its name (a title, an operationId, an event type), 2 when the title holds the query's words in
    a row (the last one may be the start of a word), 1 when its context does (an operation's `METHOD /path`), else 0."""
    asked = query.lower()
    name = section.ref.lower().removeprefix("op-").removeprefix("event-")
    if asked in (section.title.lower(), name):
        return 3
    phrase = " " + " ".join(words)  # its last word may be typed only so far
    if phrase in _words(section.title):
        return 2
    if asked in section.context.lower() or phrase in _words(section.context):
        return 1
    # A path written with other parameter names (`/jobs/{id}` for the spec's `/jobs/{job_id}`).
    if "{" in asked and _PARAMETER.sub("{}", asked) in _PARAMETER.sub("{}", section.context.lower()):
        return 1
    return 0


def snippet(text: str, words: list[str], width: int = SNIPPET_CHARS) -> Markup:
    """Some `width` characters of `text` around the first word that starts with one of `words`,
    each such word marked."""
    starts = re.compile(r"(?<![\w])(" + "|".join(re.escape(w) for w in words) + r")[\w]*", re.I)
    first = starts.search(text)
    begin = 0 if first is None else max(0, first.start() - width // 3)
    if begin:
        begin = text.find(" ", begin) + 1 or begin
    end = min(len(text), begin + width)
    if end < len(text) and (space := text.rfind(" ", begin, end)) > begin:
        end = space
    piece = text[begin:end]
    marked, at = [], 0
    for m in starts.finditer(piece):
        marked += [escape(piece[at : m.start()]), Markup("<mark>"), escape(m.group(0)), Markup("</mark>")]
        at = m.end()
    marked.append(escape(piece[at:]))
    prefix = "… " if begin else ""
    suffix = " …" if end < len(text) else ""
    return escape(prefix) + Markup("").join(marked) + escape(suffix)
