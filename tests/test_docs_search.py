"""The docs search (/docs/search): what a reader types finds the guide section, operation, event or
release, each link lands on an element of that id, and no query breaks the page."""

import re
from collections import Counter
from urllib.parse import urlsplit

import pytest

from portal.helpers import docs_search


def hits(page: str) -> list[str]:
    return re.findall(r'class="search-hit-title" href="([^"]+)"', page)


def search(client, q: str, **headers):
    return client.get("/docs/search", params={"q": q}, headers=headers)


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("webhooks", "/docs/guides/webhooks"),  # a guide by its title
        ("webh", "/docs/guides/webhooks"),  # typed so far: words match by their start
        ("retry backoff", "/docs/guides/errors#backoff"),  # a section of a guide, by its words
        ("create_job", "/docs/api#op-create_job"),  # an operation by its operationId
        ("job.succeeded", "/docs/api#event-job.succeeded"),  # a webhook event by its type
        ("1.1.0", "/docs/changelog#v1.1.0"),  # a release by its version
        ("npm", "/docs/sdk"),  # the SDKs' install
        ("how do I poll a job", "/docs/getting-started#3-submit-a-job-and-poll-it"),  # stop words left out
    ],
)
def test_what_a_reader_types_finds_its_section_first(client, query, first):
    page = search(client, query)
    assert page.status_code == 200
    assert hits(page.text)[0] == first, hits(page.text)[:5]


def test_an_operation_is_found_by_its_method_and_path(client):
    found = hits(search(client, "GET /api/v1/jobs").text)
    assert set(found[:2]) == {"/docs/api#op-get_job", "/docs/api#op-list_jobs"}
    # Its path parameter named otherwise than in the spec (`{job_id}`).
    assert hits(search(client, "/api/v1/jobs/{id}").text)[0] == "/docs/api#op-get_job"


def test_every_word_must_match(client):
    assert hits(search(client, "webhooks").text)
    page = search(client, "webhooks zebra")
    assert hits(page.text) == [] and "No results for “webhooks zebra”." in page.text
    assert "Try fewer words" in page.text


def test_every_section_links_to_an_element_of_its_id(client, app):
    """Each result's link names an id its page has: a heading the guide's Markdown gave one, an
    operation's article, an event's row, a release."""
    with app.test_request_context():
        from portal.views.docs import _search_index, guides

        sections = _search_index(app.config["PUBLIC_BASE_URL"]).sections.values()
    pages: dict[str, str] = {}
    kinds = Counter()
    for section in sections:
        path, _, anchor = section.url.partition("#")
        if path not in pages:
            response = client.get(path)
            assert response.status_code == 200, path
            pages[path] = response.text
        if anchor:
            assert f'id="{anchor}"' in pages[path], section.url
        kinds[section.kind] += 1
    assert kinds["Guide"] > len(guides()) and kinds["API"] > 20  # the guides by section
    assert kinds["Webhook event"] >= 3 and kinds["Changelog"] >= 3 and kinds["SDK"] >= 3
    # The guides' heading ids are unique on their pages (the skip link's #main, the nav's ids).
    for path, page in pages.items():
        if path.startswith("/docs/guides/") or path == "/docs/getting-started":
            ids = Counter(re.findall(r'\sid="([^"]+)"', page))
            assert [i for i, n in ids.items() if n > 1] == [], path


@pytest.mark.parametrize(
    "query", ["title:webhooks", "web*", "+job -webhook", "a:b^2~ +* -", "~", "\\", "{}", "'\"", "é ü 日本", "%00"]
)
def test_lunr_query_syntax_is_only_text(client, query):
    page = search(client, query)
    assert page.status_code == 200
    assert "<mark>" not in page.text or all("<" not in s for s in _snippets_without_marks(page.text))


def test_a_query_too_long_or_of_too_many_words_says_so_beside_the_box(client):
    long = search(client, "x" * (docs_search.MAX_QUERY_CHARS + 1))
    assert long.status_code == 400
    assert f'id="search-error" role="alert">Search for at most {docs_search.MAX_QUERY_CHARS} characters.' in long.text
    assert re.search(
        r'<input type="search" id="search-q"[^>]*aria-invalid="true" aria-describedby="search-error"', long.text
    )
    many = search(client, " ".join(["word"] * (docs_search.MAX_WORDS + 1)))
    assert many.status_code == 400 and f"Search for at most {docs_search.MAX_WORDS} words." in many.text


def test_snippets_mark_the_words_and_escape_the_rest(client):
    page = search(client, "x-api-key")
    assert "<mark>x-api-key</mark>" in page.text or "<mark>x</mark>-<mark>api</mark>-<mark>key</mark>" in page.text
    # Each result shows where it matched, a stem's other forms included ("idempotent").
    for query in ("idempotency", "polling"):
        snippets = re.findall(r'<p class="search-snippet">(.*?)</p>', search(client, query).text, re.S)
        assert snippets and all("<mark>" in s for s in snippets), query
    for query in ("key", "json", "header", "curl"):
        for snippet in _snippets_without_marks(search(client, query).text):
            assert "<" not in snippet and ">" not in snippet, snippet


def test_as_the_reader_types_htmx_gets_the_results_and_the_status_line_only(client):
    page = search(client, "webhooks", **{"HX-Request": "true", "HX-Target": "search-results"})
    assert page.status_code == 200
    assert "<html" not in page.text and "<nav" not in page.text
    assert re.match(r'<p id="search-status" hx-swap-oob="innerHTML">\d+ results for “webhooks”', page.text)
    assert '<div id="search-results"' in page.text and hits(page.text)[0] == "/docs/guides/webhooks"
    # An error is shown where the results go (htmx swaps a 200, not a 400).
    long = search(client, "x" * 300, **{"HX-Request": "true", "HX-Target": "search-results"})
    assert long.status_code == 200 and 'role="alert">Search for at most' in long.text


def test_the_search_box_is_on_the_docs_pages_and_works_without_javascript(client):
    home = client.get("/docs").text
    assert re.search(
        r'<form id="home-q-form" class="docs-search" role="search" action="/docs/search" method="get">', home
    )
    assert 'id="home-q" name="q"' in home and 'id="side-q"' not in home  # one box on the home page
    guide = client.get("/docs/guides/errors").text
    assert 'id="side-q" name="q"' in guide
    assert "/docs/search" in urlsplit(re.search(r'action="([^"]+)"', guide).group(1)).path
    empty = search(client, "")
    assert empty.status_code == 200 and "Type a word" in empty.text and hits(empty.text) == []


def _snippets_without_marks(page: str) -> list[str]:
    return [
        s.replace("<mark>", "").replace("</mark>", "")
        for s in re.findall(r'<p class="search-snippet">(.*?)</p>', page, re.S)
    ]


def test_ten_first_searches_at_once_build_one_index(app, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from portal.views import docs

    built = []
    real = docs.docs_search.Index

    def counting(sections):
        built.append(len(sections))
        return real(sections)

    monkeypatch.setattr(docs.docs_search, "Index", counting)
    monkeypatch.setattr(docs, "_SEARCH_INDEXES", {})

    def first_search(_):
        with app.test_request_context():
            return docs._search_index("https://docs.example").search("webhooks").total

    with ThreadPoolExecutor(10) as pool:
        totals = set(pool.map(first_search, range(10)))
    assert len(built) == 1 and len(totals) == 1 and totals.pop() > 0
