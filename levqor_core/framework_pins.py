"""The frameworks whose internals the app relies on run at the versions requirements.txt pins.

The app reaches past the public API of a few frameworks to save per-request work or to change a
behaviour they offer no hook for (docs/decisions/). tests/test_framework_privates.py proves each
of those private names still holds at the pinned versions; this check, run by the app factory,
makes sure the versions installed are those, so an upgrade that changed an internal fails at
start-up with a readable message instead of misbehaving on some request later.
"""

import re
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent.parent / "requirements.txt"

# Distribution names as requirements.txt spells them; each is used through a private name.
FRAMEWORKS = (
    "connexion",
    "starlette",
    "a2wsgi",
    "Flask",
    "Flask-Limiter",
    "Flask-Login",
    "Flask-Principal",
    "flask-security-too",
    "rq",
    "redis",
    "uvicorn",
    "uvicorn-worker",
)

_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)")


class FrameworkVersionError(RuntimeError):
    """An installed framework is not the version the app's private-name checks were made for."""


def canonical(name: str) -> str:
    """PEP 503's normalised project name: `Flask_Limiter` and `flask-limiter` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """`name==version` lines of a requirements file, by canonical name (extras and comments ignored)."""
    found = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def mismatches(pinned: dict[str, str], frameworks=FRAMEWORKS, version_of=None) -> list[str]:
    """One line per framework that is unpinned, missing, or installed at another version."""
    version_of = version_of or installed
    problems = []
    for name in frameworks:
        want = pinned.get(canonical(name))
        have = version_of(name)
        if want is None:
            problems.append(f"{name} is not pinned (name==version) in requirements.txt")
        elif have is None:
            problems.append(f"{name} is not installed; requirements.txt pins {want}")
        elif have != want:
            problems.append(f"{name} {have} is installed; requirements.txt pins {want}")
    return problems


def check(requirements: Path = REQUIREMENTS, frameworks=FRAMEWORKS, version_of=None) -> None:
    """Raise FrameworkVersionError naming every framework not at its pinned version."""
    try:
        text = requirements.read_text()
    except FileNotFoundError:
        raise FrameworkVersionError(f"{requirements} is missing: it pins the frameworks the app relies on") from None
    problems = mismatches(pins(text), frameworks, version_of)
    if problems:
        raise FrameworkVersionError(
            "The app uses private names of these frameworks (docs/decisions/), checked only at the "
            "versions requirements.txt pins:\n  "
            + "\n  ".join(problems)
            + "\nInstall the pins (.venv/bin/pip install -r requirements.txt). To upgrade one, change its pin, "
            "install it, and run .venv/bin/pytest tests/test_framework_privates.py: it names every private "
            "name that moved."
        )
