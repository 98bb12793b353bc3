"""The README stays short, and the docs point at things that exist: every relative link (and its
#section) resolves, every `make` target and `flask` command they name is real, and every repository
path they quote is there."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 200

# Pages a link may name before they are written (none now).
EXPECTED_FROM_OTHER_BRANCHES: set[str] = set()

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$", re.M)
# Top-level entries of the repository a quoted path may start with.
_REPO_DIRS = ("levqor_core", "handlers", "jobs", "portal", "tests", "bench", "sdk-gen", "openapi", "migrations")
_REPO_DIRS += ("scripts", "docs", ".ci")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _without_code(text: str) -> str:
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _code(text: str) -> list[str]:
    """The text of every code span and fenced block: where commands and paths are quoted."""
    return _FENCE.findall(text) + _CODE_SPAN.findall(_FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in _HEADING.findall(_FENCE.sub("", path.read_text()))}


def relative_links(path: Path) -> list[str]:
    return [t for t in _LINK.findall(_without_code(path.read_text())) if not re.match(r"^[a-z]+:", t)]


def test_the_readme_stays_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move the detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_code_fences_are_closed(page):
    fences = [n for n, line in enumerate(page.read_text().splitlines(), 1) if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0, f"{_rel(page)}: a code fence is left open (fences on lines {fences})"
    empty = [a for a, b in zip(fences[::2], fences[1::2], strict=True) if b == a + 1]
    assert not empty, f"{_rel(page)}: an empty code block at line {empty} (a doubled fence?)"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
            continue
        if not resolved.exists():
            if _rel(resolved) not in EXPECTED_FROM_OTHER_BRANCHES:
                broken.append(f"{target}: no such file")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {_rel(resolved)}")
    assert not broken, f"{_rel(page)}: " + "; ".join(broken)


def test_the_docs_map_links_every_page():
    index = ROOT / "docs" / "index.md"
    linked = {_rel((index.parent / t.partition("#")[0]).resolve()) for t in relative_links(index)}
    missing = [_rel(p) for p in DOCS if p != index and "decisions" not in p.parts and _rel(p) not in linked]
    assert not missing, f"docs/index.md does not link {missing}"
    assert "docs/decisions/README.md" in linked


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_make_target_named_exists(page):
    named = {m for code in _code(page.read_text()) for m in re.findall(r"\bmake ([a-z][\w-]*)", code)}
    assert named <= make_targets(), f"{_rel(page)} names make targets the Makefile lacks: {named - make_targets()}"


def flask_commands() -> dict[str, set[str]]:
    """Every `flask` group and command the app registers (levqor_core.cli, Flask-Migrate's `db`,
    Flask's own), without building the app (no database or Redis needed)."""
    from flask import Flask
    from flask_migrate.cli import db

    from levqor_core import cli

    app = Flask("docs")
    cli.register(app)
    app.cli.add_command(db)
    groups = {name: set(getattr(command, "commands", {})) for name, command in app.cli.commands.items()}
    return groups | {"run": set(), "shell": set(), "routes": set(), "--help": set(), "--app": set()}


def test_flask_commands_lists_the_apps_own():
    commands = flask_commands()
    assert {"re-encrypt"} <= commands["secrets"] and {"upgrade"} <= commands["db"]


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_flask_command_named_exists(page):
    commands = flask_commands()
    unknown = []
    for code in _code(page.read_text()):
        for group, sub in re.findall(r"(?:^|[\s/])flask (--?[\w-]+|[a-z][\w-]*)(?: ([a-z][\w-]*))?", code):
            if group not in commands:
                unknown.append(f"flask {group}")
            elif sub and commands[group] and sub not in commands[group]:
                unknown.append(f"flask {group} {sub}")
    assert not unknown, f"{_rel(page)} names commands `flask --help` does not list: {unknown}"


def quoted_paths(text: str) -> set[str]:
    """Repository paths quoted in code spans, without placeholders (<x>, {a,b}, *) or test ids."""
    found = set()
    for span in _CODE_SPAN.findall(_FENCE.sub("", text)):
        for token in span.split():
            token = token.rstrip(".,;:)")
            if "/" in token and token.split("/")[0] in _REPO_DIRS and not re.search(r"[<>{}*$]", token):
                found.add(token)
    return found


def quoted_path_exists(quoted: str) -> bool:
    """The file exists, and a `file.py::test_name` names a test defined in it."""
    path, _, test = quoted.partition("::")
    if not (ROOT / path).exists():
        return False
    return not test or re.search(rf"^\s*(async )?def {re.escape(test)}\(", (ROOT / path).read_text(), re.M) is not None


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_repository_path_quoted_exists(page):
    missing = sorted(
        p
        for p in quoted_paths(page.read_text())
        if not quoted_path_exists(p) and p.partition("::")[0] not in EXPECTED_FROM_OTHER_BRANCHES
    )
    assert not missing, f"{_rel(page)} quotes paths (or tests) that do not exist: {missing}"


@pytest.mark.parametrize(
    "page", [ROOT / "docs" / "performance.md", ROOT / "docs" / "operating" / "soak-and-scale.md"], ids=_rel
)
def test_figures_are_current_not_a_diary(page):
    """Each figure stands with its command; no dated runs or commit hashes to compare against."""
    text = page.read_text()
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text), f"{_rel(page)} dates its runs"
    assert not re.findall(r"`[0-9a-f]{7,40}`", text), f"{_rel(page)} names commits"


# The checks themselves catch what they are for.


def test_the_checks_catch_a_broken_link_a_missing_target_a_missing_command_and_a_missing_path(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\nSee [gone](nowhere.md), [here](#title), [there](#no-such-part) and `make no-such-target`.\n"
        "Run `flask secrets no-such-command`, read `levqor_core/no_such_module.py` and "
        "`tests/test_docs.py::test_no_such_test`.\n"
    )
    assert relative_links(page) == ["nowhere.md", "#title", "#no-such-part"]
    assert anchors(page) == {"title"}
    assert "no-such-target" not in make_targets() and "run" in make_targets()
    assert "no-such-command" not in flask_commands()["secrets"]
    assert quoted_paths(page.read_text()) == {"levqor_core/no_such_module.py", "tests/test_docs.py::test_no_such_test"}
    assert not any(quoted_path_exists(p) for p in quoted_paths(page.read_text()))
    assert quoted_path_exists("tests/test_docs.py::test_slugs_follow_githubs_rules")


def test_slugs_follow_githubs_rules():
    assert slug("Soak: `make soak`") == "soak-make-soak"
    assert slug("Mail, Notion and alerts") == "mail-notion-and-alerts"
    assert slug("A leaked key does not lock its owner out") == "a-leaked-key-does-not-lock-its-owner-out"
