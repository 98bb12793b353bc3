"""/docs/changelog renders openapi/CHANGELOG.md: every version of the spec, with its date."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHANGELOG = (ROOT / "openapi" / "CHANGELOG.md").read_text()
SPEC_VERSION = yaml.safe_load((ROOT / "openapi" / "openapi.yaml").read_text())["info"]["version"]


def test_the_changelog_has_the_current_version_and_every_release():
    headings = re.findall(r"^## (\d+\.\d+\.\d+) \((.+)\)$", CHANGELOG, re.M)
    versions = [v for v, _ in headings]
    assert versions[0] == SPEC_VERSION, "the spec's info.version heads the changelog"
    released = sorted(p.stem.removeprefix("openapi-") for p in (ROOT / "openapi" / "released").glob("openapi-*.yaml"))
    for version in released:
        assert version in versions, f"released {version} has no changelog entry"
        assert re.match(r"\d{4}-\d{2}-\d{2}$", dict(headings)[version]), "a release is dated"


def test_docs_changelog_shows_the_versions_and_is_in_the_docs_navigation(cx):
    client = cx.test_client()
    page = client.get("/docs/changelog")
    assert page.status_code == 200
    html = page.text
    # Released versions with their date; the version this server runs, not yet released, says so.
    assert re.search(r'<h2 id="v1\.0\.0-title">1\.0\.0 <span class="release-date"><time datetime="2026-11-25">', html)
    current = re.escape(SPEC_VERSION)
    unreleased = rf'<h2 id="v{current}-title">{current} <span class="badge[^"]*">on this server, not yet released'
    assert re.search(unreleased, html)
    # What to do, for a caller; the maintainers' notes (spec-check, openapi/released) stay in the repository.
    assert "Additions only: nothing to change." in html
    assert "make spec-check" not in html and "openapi/released" not in html
    assert "too-many-jobs-in-flight" in html and "nesting-too-deep" in html
    assert "too-many-failed-authentications" in html
    assert html.count("<h1") == 1
    assert 'href="/docs/changelog" aria-current="page">Changelog</a>' in html
    assert 'href="/docs/changelog"' in client.get("/docs/api").text
