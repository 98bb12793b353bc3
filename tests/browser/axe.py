"""axe-core in the browser tests: run it on the page as shown and fail on serious or critical findings.

axe-core comes from npm (`axe-core`, pinned in package-lock.json, installed by `make setup`) and is
read from node_modules at test time, never copied into the repository.

It is injected with `page.evaluate(source)`, not a `<script>` tag: Playwright evaluates through
the DevTools protocol, which the page's Content-Security-Policy does not govern, so the pages are
checked under their real CSP (`script-src 'self'`, no inline style). A context with
`bypass_csp=True` would also let Swagger UI's inline styles apply, and the colours and layout
checked would no longer be the ones visitors get.
"""

from functools import cache
from pathlib import Path

AXE_JS = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")


@cache
def _source() -> str:
    if not AXE_JS.exists():
        raise AssertionError(f"{AXE_JS} is missing: `make setup` installs axe-core from package-lock.json")
    return AXE_JS.read_text()


def violations(page, exclude: tuple[str, ...] = ()) -> list[dict]:
    """axe's violations of impact serious or critical on the page as it is now (every rule axe runs)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(_source())
    results = page.evaluate(
        """async (exclude) => {
            const context = exclude.length ? {exclude: exclude.map((s) => [s])} : document;
            return await axe.run(context, {resultTypes: ["violations"]});
        }""",
        list(exclude),
    )
    return [v for v in results["violations"] if v["impact"] in BLOCKING]


def report(found: list[dict]) -> str:
    """One line per violating element: the rule, its impact, the element's selector, and axe's help."""
    lines = []
    for v in found:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} <{v['helpUrl']}>")
        for node in v["nodes"]:
            target = " ".join(" >> ".join(t) if isinstance(t, list) else t for t in node["target"])
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"    {target}: {summary[:300]}")
    return "\n".join(lines)


def assert_accessible(page, where: str = "", exclude: tuple[str, ...] = ()) -> None:
    """Fails listing every serious or critical axe violation on the current page."""
    found = violations(page, exclude)
    count = sum(len(v["nodes"]) for v in found)
    assert not found, f"{count} serious/critical axe violation(s) on {where or page.url}:\n{report(found)}"
