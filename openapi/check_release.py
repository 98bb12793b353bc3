"""The breaking-change gate (`make spec-check`): the spec against the last released one.

Optic (`optic diff OLD NEW --check`, offline) names every change and flags the breaking ones; this
script applies the version rule to what it found:

- a breaking change (a removed path, operation, parameter, response property or enum value, a new
  required request field, a narrowed type) needs info.version's major number to go up;
- any other change to the contract (a new operation, response, parameter or property) needs at
  least the minor number to go up;
- a change to descriptions, summaries or examples alone may keep the version (or bump the patch).

The released spec is the newest openapi/released/openapi-<version>.yaml: a copy kept in the
repository rather than the spec at a `v<version>` tag, because CI works on a fresh clone where tags
may be missing, and because the SDKs are tagged in the levqor-sdk repository, not this one.
Exit 0 when the rule holds, 1 when it does not, 2 when Optic could not run.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from levqor_core import spec as contract  # noqa: E402  (after the path: run as a script)

SPEC = ROOT / "openapi" / "openapi.yaml"
RELEASED = ROOT / "openapi" / "released"
OPTIC = ROOT / "node_modules" / ".bin" / "optic"
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
# Keywords whose changes say nothing to a client's code.
DOCS_KEYWORDS = {"description", "summary", "example", "examples", "externalDocs", "title"}


def version(text: str) -> tuple[int, int, int]:
    match = _VERSION.match(str(text))
    if not match:
        raise SystemExit(f"info.version {text!r} is not MAJOR.MINOR.PATCH")
    return tuple(int(n) for n in match.groups())


def spec_version(path: Path) -> tuple[int, int, int]:
    return version(yaml.safe_load(path.read_text())["info"]["version"])


def latest_released(folder: Path = RELEASED) -> Path:
    """The released copy with the highest version in its name."""
    copies = [p for p in folder.glob("openapi-*.yaml") if _VERSION.match(p.stem.removeprefix("openapi-"))]
    if not copies:
        raise SystemExit(f"no released spec (openapi-<version>.yaml) in {folder}")
    return max(copies, key=lambda p: version(p.stem.removeprefix("openapi-")))


def _same_version(new: Path, old_version: str, folder: Path) -> Path:
    """A copy of `new` that claims `old_version`, line for line: Optic skips its breaking-change
    checks when it sees a new major version, and this script applies the version rule itself."""
    text, count = re.subn(r"^(  version:).*$", rf"\g<1> {old_version}", new.read_text(), count=1, flags=re.M)
    if not count:
        raise SystemExit(f"{new}: no info.version line")
    copy = folder / new.name
    copy.write_text(text)
    return copy


def optic(old: Path, new: Path, *, as_json: bool = False) -> subprocess.CompletedProcess:
    """Optic's diff of `new` against `old`, with `new` named by its own path in the output.

    Optic compares a discriminated oneOf's variants but not the properties beside them (JobCreate's
    envelope): where either spec has one, the envelopes are compared too, in a second Optic run
    beside the first (not for --json, which lists additions, the envelope's among them). That run
    compares only the paths that use a schema with variants in either spec: the others' changes are
    the first run's already, and an Optic run costs ~3 s of CPU per 10 paths."""
    old_version = yaml.safe_load(old.read_text())["info"]["version"]
    with tempfile.TemporaryDirectory() as folder:
        pairs = [(old, _same_version(new, old_version, Path(folder)), str(new))]
        old_spec, new_spec = yaml.safe_load(old.read_text()), yaml.safe_load(new.read_text())
        if not as_json and (contract.has_variants(old_spec) or contract.has_variants(new_spec)):
            envelopes = Path(folder) / "envelopes"
            envelopes.mkdir()
            old_env, new_env = envelopes / f"old-{old.name}", envelopes / new.name
            # The same paths on both sides (a path left out of one side would read as removed).
            paths = contract.paths_reaching_variants(old_spec) | contract.paths_reaching_variants(new_spec)
            old_env.write_text(_yaml(contract.only_paths(contract.envelopes(old_spec), paths)))
            new_spec["info"]["version"] = old_version
            new_env.write_text(_yaml(contract.only_paths(contract.envelopes(new_spec), paths)))
            pairs.append((old_env, new_env, f"{new} (envelopes)"))
        runs = [_start_optic(a, b, as_json) for a, b, _ in pairs]
        done = [_finish_optic(run) for run in runs]
        for run, (_, path, shown) in zip(done, pairs, strict=True):
            run.stdout = run.stdout.replace(str(path), shown)
    first = done[0]
    first.returncode = max(run.returncode for run in done)
    first.stdout = "\n".join(run.stdout for run in done)
    return first


def _yaml(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True)


def _start_optic(old: Path, new: Path, as_json: bool) -> subprocess.Popen:
    cmd = [str(OPTIC), "diff", str(old), str(new), "--check"] + (["--json"] if as_json else [])
    env = {**os.environ, "OPTIC_TELEMETRY_LEVEL": "off", "NO_COLOR": "1", "FORCE_COLOR": "0"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _finish_optic(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(2)
    return done


# Changes Optic calls breaking that break no client, each with why: matched on the operation and
# the start of Optic's message. Keep this short; every entry is a decision.
_JOB_VARIANTS = (
    "1.2.0 describes each workflow's input (JobCreate's oneOf, one variant per workflow): the app "
    "refused every other input already, with 400 invalid-job-input or unknown-workflow"
)
ACCEPTED = {
    ("POST /v1/jobs", "[prevent expanded in request union types] request body changed to oneOf"): _JOB_VARIANTS,
    ("POST /sandbox/v1/jobs", "[prevent expanded in request union types] request body changed to oneOf"): _JOB_VARIANTS,
}


def flagged_changes(optic_text: str) -> list[tuple[str, str]]:
    """(operation, message) of each change Optic's check flagged (its `x [rule] message` lines)."""
    found, operation = [], ""
    for line in optic_text.splitlines():
        if re.match(r"^x [A-Z]+ /", line):
            operation = line[2:].rstrip(": ")
        elif match := re.match(r"^\s+x (\[.+)$", line):
            found.append((operation, match.group(1).strip()))
    return found


def accepted_reason(operation: str, message: str) -> str | None:
    return next((why for (op, start), why in ACCEPTED.items() if op == operation and message.startswith(start)), None)


def breaking_changes(optic_text: str) -> list[str]:
    """Each breaking change Optic found, as `OPERATION: message (where)`."""
    found, operation = [], ""
    lines = optic_text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^x [A-Z]+ /", line):
            operation = line[2:].rstrip(": ")
        elif "This is a breaking change" in line:
            message = line.strip().removeprefix("x ").strip()
            where = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].strip().startswith("at ") else ""
            found.append(f"{operation}: {message} {where}".strip())
    return found


def _is_docs_only(key: str) -> bool:
    """True when a JSON pointer (`/schema/properties/x/description`) ends in a docs keyword."""
    parts = [p for p in key.split("/") if p]
    keyword_position = True
    for part in parts:
        if keyword_position and (part in DOCS_KEYWORDS or part.startswith("x-")):
            return True
        # The segment after `properties` is a property's name, not a keyword.
        keyword_position = part != "properties"
        if not keyword_position:
            continue
    return False


def contract_changes(optic_json: dict) -> list[str]:
    """Every change Optic reported that is more than documentation, as `where: what`."""
    found = []

    def walk(node, where):
        if isinstance(node, list):
            for item in node:
                walk(item, where)
            return
        if not isinstance(node, dict):
            return
        here = f"{where} {node['name']}".strip() if "name" in node else where
        if node.get("change") in ("added", "removed") and "name" in node:
            found.append(f"{here}: {node['change']}")
            return
        for attribute in node.get("attributes", []):
            key = attribute.get("key", "")
            if not _is_docs_only(key):
                found.append(f"{here}: {key or '(whole)'} {attribute.get('change')}")
        for name, value in node.items():
            if name != "attributes" and isinstance(value, list | dict):
                walk(value, here)

    walk(optic_json.get("operations", []), "")
    return found


def check(old: Path, new: Path) -> tuple[bool, list[str]]:
    """Whether `new` may follow `old` under the version rule, and the lines saying why."""
    old_v, new_v = spec_version(old), spec_version(new)
    shown = lambda v: ".".join(map(str, v))  # noqa: E731
    head = f"{new.name} {shown(new_v)} against released {old.name} {shown(old_v)}"
    if new_v < old_v:
        return False, [f"{head}: info.version went down"]
    text = optic(old, new)
    flagged = flagged_changes(text.stdout) if text.returncode == 1 else []
    accepted = [f"{op}: {msg} (accepted: {why})" for op, msg in flagged if (why := accepted_reason(op, msg))]
    if flagged and len(accepted) == len(flagged):
        if new_v[:2] > old_v[:2]:
            return True, [f"{head}: no breaking change but those accepted in check_release.ACCEPTED:", *accepted]
        return False, [f"{head}: changes to the contract need a new minor version:", *accepted]
    if text.returncode == 1:
        changes = breaking_changes(text.stdout) or [text.stdout.strip()]
        if new_v[0] > old_v[0]:
            return True, [f"{head}: breaking changes, allowed by the new major version:", *changes]
        return False, [
            f"{head}: breaking changes need a new major version (info.version {old_v[0] + 1}.0.0):",
            *changes,
        ]
    if new_v[:2] > old_v[:2]:
        return True, [f"{head}: no breaking change"]
    changes = contract_changes(json.loads(optic(old, new, as_json=True).stdout or "{}"))
    if changes:
        wanted = f"{old_v[0]}.{old_v[1] + 1}.0"
        return False, [f"{head}: additive changes need a new minor version (info.version {wanted}):", *changes]
    return True, [f"{head}: no change to the contract"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--released", type=Path, help="the released spec (default: newest in openapi/released/)")
    args = parser.parse_args(argv)
    ok, lines = check(args.released or latest_released(), args.spec)
    print("\n".join(lines if ok else ["spec-check FAILED: " + lines[0], *("  - " + x for x in lines[1:])]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
