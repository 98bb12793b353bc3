"""The SDKs `make sdk` generated (build/sdk/python, build/sdk/node), served by this server as
packages `pip install` and `npm install` take by URL: an sdist-style source archive of the Python
SDK, and an npm tarball (`package/…`) of the built Node SDK.

The archives are made from the generated folders when first asked for, kept in memory while the
folder is unchanged, and never include what a package does not need (node_modules, caches)."""

import io
import json
import tarfile
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUILD = ROOT / "build" / "sdk"
SKIP = {"node_modules", "__pycache__", ".git", ".openapi-generator", ".pytest_cache"}
_lock = threading.Lock()
_cache: dict[tuple, bytes] = {}


@dataclass(frozen=True)
class Package:
    language: str  # python | node
    version: str
    filename: str
    folder: Path


def _version(language: str, folder: Path) -> str | None:
    try:
        if language == "python":
            return tomllib.loads((folder / "pyproject.toml").read_text())["project"]["version"]
        package = json.loads((folder / "package.json").read_text())
        return package["version"] if (folder / "dist").is_dir() else None  # unbuilt: not installable
    except (OSError, KeyError, ValueError):
        return None


def built(build_dir: Path | None = None) -> dict[str, Package]:
    """The SDKs generated under `build_dir` (build/sdk), by language; none when `make sdk` has not run."""
    build_dir = build_dir or DEFAULT_BUILD
    found = {}
    for language, name in (("python", "levqor-{v}.tar.gz"), ("node", "levqor-sdk-{v}.tgz")):
        folder = build_dir / language
        version = _version(language, folder)
        if version:
            found[language] = Package(language, version, name.format(v=version), folder)
    return found


def _files(folder: Path):
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not SKIP.intersection(relative.parts):
            yield path, relative


def archive(package: Package) -> bytes:
    """The package's archive: `levqor-<v>/…` (Python) or `package/…` (npm)."""
    files = list(_files(package.folder))
    stamp = (package.folder, package.version, max((p.stat().st_mtime_ns for p, _ in files), default=0), len(files))
    with _lock:
        if stamp in _cache:
            return _cache[stamp]
    top = f"levqor-{package.version}" if package.language == "python" else "package"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, relative in files:
            tar.add(path, arcname=f"{top}/{relative.as_posix()}", recursive=False)
    data = buffer.getvalue()
    with _lock:
        _cache.clear()
        _cache[stamp] = data
    return data
