"""Generate the Levqor SDKs from openapi/openapi.yaml (`make sdk`).

For each language: wipe build/sdk/<lang>, run openapi-generator-cli with sdk-gen/<lang>/config.yaml
and the templates in sdk-gen/<lang>/templates, copy the hand-written layer in, and (Node) compile
the TypeScript to JavaScript. Generated files are never edited: change the spec, the config, a
template or the hand-written layer, and run this again.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from drift import drift

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from levqor_core import spec as contract  # noqa: E402  (after the path: run as a script)

HERE = ROOT / "sdk-gen"
SPEC = ROOT / "openapi" / "openapi.yaml"
CHANGELOG = ROOT / "openapi" / "CHANGELOG.md"
OUT = ROOT / "build" / "sdk"
# What publish.py reads: the version and the spec the output was generated from.
META = "generated.json"
# What the generator reads: the public spec (as served at /api/openapi.json), with JobCreate as its
# envelope (workflow, input): openapi-generator would make its per-workflow variants a wrapper
# class, and `create_job({"workflow": ..., "input": ...})` would stop working.
GENERATOR_INPUT = "openapi.json"

# Files the generators emit that belong to a different project layout (CI for another host,
# scripts pushing to a placeholder repository, empty test stubs).
IGNORED = {
    "python": ["test/**", ".github/**", ".gitlab-ci.yml", ".travis.yml", "git_push.sh", "tox.ini"],
    "node": ["git_push.sh"],
}
LANGS = {
    # language: (generator, the option that carries the package version, hand-written layer)
    "python": ("python", "packageVersion", [("python/levqor", "levqor")]),
    "node": ("typescript-fetch", "npmVersion", [("node/src", "src")]),
}


class GenerationError(RuntimeError):
    pass


def step(lang: str, message: str) -> None:
    print(f"==> [sdk {lang}] {message}", flush=True)


def spec_version() -> str:
    return str(yaml.safe_load(SPEC.read_text())["info"]["version"])


def spec_digest() -> str:
    return hashlib.sha256(SPEC.read_bytes()).hexdigest()


def generator_cli() -> str:
    beside = Path(sys.executable).with_name("openapi-generator-cli")
    cli = str(beside) if beside.exists() else shutil.which("openapi-generator-cli")
    if not cli:
        raise GenerationError("openapi-generator-cli is not installed: run `make setup` (requirements-dev.txt).")
    if not shutil.which("java"):
        raise GenerationError("openapi-generator-cli needs Java 11+: run `make system-deps`.")
    return cli


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        output = (proc.stdout[-4000:] + proc.stderr[-4000:]).strip()
        raise GenerationError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")


def show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def generate(lang: str, version: str, cli: str, root: Path = OUT) -> Path:
    generator, version_option, layer = LANGS[lang]
    out = root / lang
    started = time.monotonic()
    step(lang, f"wiping {show(out)}")
    shutil.rmtree(out, ignore_errors=True)
    step(lang, f"openapi-generator {generator} → {show(out)} (version {version})")
    run(
        [
            cli,
            "generate",
            "-g",
            generator,
            "-i",
            str(root / GENERATOR_INPUT),
            "-o",
            str(out),
            "-c",
            str(HERE / lang / "config.yaml"),
            "-t",
            str(HERE / lang / "templates"),
            "--additional-properties",
            f"{version_option}={version}",
            "--global-property",
            "apiTests=false,modelTests=false",
            "--openapi-generator-ignore-list",
            ",".join(IGNORED[lang]),
        ]
    )
    for source, target in layer:
        step(lang, f"adding the hand-written layer sdk-gen/{lang}/{Path(source).name}/ → {target}/")
        shutil.copytree(HERE / source, out / target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    add_changelog(out, version)
    if lang == "python":
        add_python_dependencies(out)
        add_python_scripts(out)
    else:
        resolve_node_modules(out)
    step(lang, f"generated in {time.monotonic() - started:.1f}s")
    return out


def changelog_entry(version: str, text: str) -> str:
    """The changelog's section for `version` (its heading and body), or "" when it has none."""
    heading = re.compile(rf"^## {re.escape(version)}\b.*$", re.M)
    found = heading.search(text)
    if found is None:
        return ""
    following = re.compile(r"^## ", re.M).search(text, found.end())
    return text[found.start() : following.start() if following else len(text)].strip()


def add_changelog(out: Path, version: str) -> None:
    """Each SDK ships the API's changelog, and its README (the package's description on PyPI
    and npm) says what this version changed."""
    text = CHANGELOG.read_text()
    (out / "CHANGELOG.md").write_text(text)
    entry = changelog_entry(version, text)
    if not entry:
        raise GenerationError(f"openapi/CHANGELOG.md has no section for {version}: add one before generating.")
    body = entry.split("\n", 1)[1].strip() if "\n" in entry else ""
    readme = out / "README.md"
    readme.write_text(
        readme.read_text().rstrip()
        + f"\n\n## What changed in {version}\n\n{body}\n\nEvery version: [CHANGELOG.md](CHANGELOG.md).\n"
    )


# What the hand-written Python layer needs beyond the generator's own dependencies.
PYTHON_DEPENDENCIES = ["standardwebhooks>=1.1.0,<2"]


def add_python_dependencies(out: Path) -> None:
    """The generator's pyproject.toml, setup.py and requirements.txt, with PYTHON_DEPENDENCIES."""
    pyproject = out / "pyproject.toml"
    text = pyproject.read_text()
    anchor = "dependencies = [\n"
    if anchor not in text:
        raise GenerationError("pyproject.toml has no dependencies list to extend")
    text = text.replace(anchor, anchor + "".join(f'  "{d}",\n' for d in PYTHON_DEPENDENCIES), 1)
    pyproject.write_text(text)
    setup = out / "setup.py"
    text = setup.read_text()
    anchor = "REQUIRES = [\n"
    if anchor not in text:
        raise GenerationError("setup.py has no REQUIRES list to extend")
    setup.write_text(text.replace(anchor, anchor + "".join(f'    "{d}",\n' for d in PYTHON_DEPENDENCIES), 1))
    requirements = out / "requirements.txt"
    requirements.write_text(requirements.read_text().rstrip("\n") + "\n" + "\n".join(PYTHON_DEPENDENCIES) + "\n")


# The console scripts the Python package installs (`pip install` puts `levqor` on the PATH).
PYTHON_SCRIPTS = {"levqor": "levqor.cli:main"}


def add_python_scripts(out: Path) -> None:
    """A [project.scripts] table in the generator's pyproject.toml, ahead of [project.urls]."""
    pyproject = out / "pyproject.toml"
    text = pyproject.read_text()
    anchor = "[project.urls]\n"
    if anchor not in text or "[project.scripts]" in text:
        raise GenerationError("pyproject.toml has no [project.urls] to put [project.scripts] before")
    scripts = "[project.scripts]\n" + "".join(f'{name} = "{target}"\n' for name, target in PYTHON_SCRIPTS.items())
    pyproject.write_text(text.replace(anchor, scripts + "\n" + anchor, 1))


def resolve_node_modules(out: Path) -> None:
    """The ES module build (module: esnext) would otherwise resolve imports the "classic" way and
    not find the SDK's dependency (standardwebhooks) in node_modules; users building from src
    get the same setting."""
    tsconfig = out / "tsconfig.json"
    settings = json.loads(tsconfig.read_text())
    settings["compilerOptions"]["moduleResolution"] = "node"
    tsconfig.write_text(json.dumps(settings, indent=2) + "\n")


def build_node(out: Path) -> None:
    """Compile the TypeScript SDK to dist/ with the TypeScript pinned in sdk-gen/node."""
    tools = HERE / "node"
    if not (tools / "node_modules" / ".bin" / "tsc").exists():
        step("node", "installing the pinned TypeScript (npm ci in sdk-gen/node)")
        run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"], cwd=tools)
    step("node", "npm install (the SDK's own dependencies, for the compiler's types)")
    # --no-package-lock: the published package is the same whether or not it was built here.
    run(
        ["npm", "install", "--ignore-scripts", "--prefer-offline", "--no-audit", "--no-fund", "--no-package-lock"],
        cwd=out,
    )
    step("node", "npm run build (tsc → dist/)")
    env = {**os.environ, "PATH": f"{tools / 'node_modules' / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(["npm", "run", "build"], cwd=out, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lang", choices=sorted(LANGS), action="append", help="only this language (repeatable)")
    parser.add_argument("--no-build", action="store_true", help="skip compiling the Node SDK")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default build/sdk)")
    args = parser.parse_args(argv)
    try:
        cli = generator_cli()
        version = spec_version()
        root = args.out.resolve()
        root.mkdir(parents=True, exist_ok=True)
        (root / META).unlink(missing_ok=True)
        public = contract.envelopes(contract.public(contract.load(SPEC)))
        (root / GENERATOR_INPUT).write_text(json.dumps(public, indent=2, default=str) + "\n")
        langs = args.lang or list(LANGS)
        for lang in langs:
            out = generate(lang, version, cli, root)
            if lang == "node" and not args.no_build:
                build_node(out)
        print("==> [sdk] checking the SDKs' operations against the spec", flush=True)
        problems = drift(SPEC, root)
        if problems:
            raise GenerationError("the SDKs and the spec disagree:\n  " + "\n  ".join(problems))
        if set(langs) == set(LANGS):
            meta = {"version": version, "spec_sha256": spec_digest(), "languages": sorted(LANGS)}
            (root / META).write_text(json.dumps(meta, indent=2) + "\n")
    except GenerationError as err:
        print(f"sdk generation failed: {err}", file=sys.stderr)
        return 1
    print(f"==> SDKs {version} ready in {show(root)}/", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
