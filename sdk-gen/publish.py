"""Publish the generated SDKs to the levqor-sdk git repository (`make sdk-publish`).

The repository gets one folder per language (python/, node/) on its branch, one commit per
version and an annotated tag v<info.version>. Publishing output identical to what the branch
holds does nothing; publishing different output under a version that is already tagged is
refused (bump info.version in openapi/openapi.yaml first).

Settings (environment): LEVQOR_SDK_REMOTE (required: the repository's URL or path),
LEVQOR_SDK_BRANCH (main), LEVQOR_SDK_GIT_NAME / LEVQOR_SDK_GIT_EMAIL (the committer).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi" / "openapi.yaml"
SOURCE = ROOT / "build" / "sdk"
LANGS = ("python", "node")
# Build products and local clutter stay out of the repository: users build from source.
SKIP = shutil.ignore_patterns("dist", "node_modules", "__pycache__", "*.egg-info", ".venv", "*.pyc")

REPO_README = """# levqor-sdk

Official Levqor API clients, version {version}, generated from the Levqor OpenAPI spec
(`openapi/openapi.yaml`) with openapi-generator and a thin hand-written layer. Do not edit by hand:
changes are made in the Levqor repository and published from there.

| folder | package | install |
| --- | --- | --- |
| [python/](python/) | `levqor` | `pip install "git+<this repository>@v{version}#subdirectory=python"` |
| [node/](node/) | `@levqor/sdk` | `cd node && npm install && npm run build`, then `npm install <path>/node` |

Each folder's README has a quick start.
"""


class PublishError(RuntimeError):
    pass


def git(*args: str, cwd: Path, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise PublishError(f"git {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


def read_meta(source: Path, spec: Path) -> dict:
    meta_file = source / "generated.json"
    if not meta_file.exists():
        raise PublishError(f"no generated SDKs in {source}: run `make sdk` first.")
    meta = json.loads(meta_file.read_text())
    if meta["spec_sha256"] != hashlib.sha256(spec.read_bytes()).hexdigest():
        raise PublishError(f"{source} was generated from an older {spec.name}: run `make sdk` first.")
    return meta


def source_commit() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def publish(remote: str, source: Path = SOURCE, spec: Path = SPEC, branch: str = "main") -> str:
    """Publish and return what happened, one line; raises PublishError when refused."""
    meta = read_meta(source, spec)
    version, tag = meta["version"], f"v{meta['version']}"
    name = os.environ.get("LEVQOR_SDK_GIT_NAME", "Levqor SDK publisher")
    email = os.environ.get("LEVQOR_SDK_GIT_EMAIL", "sdk@levqor.dev")
    with tempfile.TemporaryDirectory(prefix="levqor-sdk-") as tmp:
        work = Path(tmp) / "levqor-sdk"
        print(f"==> [sdk publish] cloning {remote}", flush=True)
        git("clone", "--quiet", "--no-checkout", remote, str(work), cwd=Path(tmp))
        if git("ls-remote", "--heads", "origin", branch, cwd=work):
            git("checkout", "--quiet", "-B", branch, f"origin/{branch}", cwd=work)
        else:
            git("checkout", "--quiet", "--orphan", branch, cwd=work)

        print(f"==> [sdk publish] staging {', '.join(LANGS)} {version}", flush=True)
        for lang in LANGS:
            shutil.rmtree(work / lang, ignore_errors=True)
            shutil.copytree(source / lang, work / lang, ignore=SKIP)
        (work / "README.md").write_text(REPO_README.format(version=version))
        git("add", "--all", cwd=work)

        tagged = bool(git("tag", "--list", tag, cwd=work))
        if not git("status", "--porcelain", cwd=work):
            return f"nothing to publish: {branch} already holds the SDKs {version}" + ("" if tagged else " (untagged)")
        if tagged:
            raise PublishError(
                f"{tag} is already published with different content; bump info.version in "
                f"{spec.name} and run `make sdk` again."
            )
        origin = source_commit()
        message = f"Levqor SDKs {version}\n\nGenerated from openapi/openapi.yaml (sha256 {meta['spec_sha256'][:12]})"
        message += f" at levqor {origin}." if origin else "."
        identity = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
        git(*identity, "commit", "--quiet", "-m", message, cwd=work)
        git(*identity, "tag", "-a", tag, "-m", f"Levqor SDKs {version}", cwd=work)
        print(f"==> [sdk publish] pushing {branch} and {tag}", flush=True)
        git("push", "--quiet", "origin", f"refs/heads/{branch}", f"refs/tags/{tag}", cwd=work)
        return f"published the SDKs {version} to {remote} ({branch}, tag {tag})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remote", default=os.environ.get("LEVQOR_SDK_REMOTE"), help="default: $LEVQOR_SDK_REMOTE")
    parser.add_argument("--branch", default=os.environ.get("LEVQOR_SDK_BRANCH", "main"))
    parser.add_argument("--source", type=Path, default=SOURCE, help="generated SDKs (default build/sdk)")
    args = parser.parse_args(argv)
    if not args.remote:
        print("sdk publish: set LEVQOR_SDK_REMOTE to the levqor-sdk repository (URL or path).", file=sys.stderr)
        return 2
    try:
        print(publish(args.remote, args.source.resolve(), SPEC, args.branch), flush=True)
    except PublishError as err:
        print(f"sdk publish refused: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
