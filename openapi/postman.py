"""Build the Postman collection (`make postman`, part of `make setup`): the public spec converted by
openapi-to-postmanv2 (node_modules, pinned in package.json), then made runnable by
levqor_core.postman.finish, into build/postman/levqor.postman_collection.json, which the app
serves at /api/postman.json.

Node is needed here, at setup, and not when the app runs: the app only reads the file.
Exit 0 when written, 1 when the converter failed.
"""

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from levqor_core import postman, spec  # noqa: E402  (after the path: run as a script)

CONVERTER = ROOT / "node_modules" / ".bin" / "openapi2postmanv2"
# requestParametersResolution is what 6.4's convert() reads (parametersResolution is its v2 name):
# examples, not schema-faked "<string>"s. Optional parameters are present but off, folders by tag.
OPTIONS = {
    "requestParametersResolution": "Example",
    "exampleParametersResolution": "Example",
    "parametersResolution": "Example",
    "folderStrategy": "Tags",
    "requestNameSource": "Fallback",
    "enableOptionalParameters": "false",
    "alwaysInheritAuthentication": "true",
    "includeWebhooks": "false",
}


def convert(public_spec: dict) -> dict:
    """openapi-to-postmanv2's collection of `public_spec`."""
    with tempfile.TemporaryDirectory(prefix="lvq-postman-") as folder:
        source, target = Path(folder) / "openapi.json", Path(folder) / "collection.json"
        source.write_text(json.dumps(public_spec, default=str), encoding="utf-8")
        options = ",".join(f"{k}={v}" for k, v in OPTIONS.items())
        done = subprocess.run(
            [str(CONVERTER), "-s", str(source), "-o", str(target), "-O", options],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0 or not target.exists():
            output = done.stdout[-3000:] + done.stderr[-3000:]
            raise RuntimeError(f"openapi2postmanv2 failed ({done.returncode}):\n{output}")
        return json.loads(target.read_text(encoding="utf-8"))


def without_streams(full: dict) -> dict:
    """The spec without its Server-Sent Event streams: a stream answers until the client leaves,
    so a collection run (newman) would wait on it for ever."""
    out = copy.deepcopy(full)
    for item in out["paths"].values():
        for method in [m for m in spec.METHODS if isinstance(item.get(m), dict)]:
            if item[method].get("x-levqor-host") == "async":
                del item[method]
    out["paths"] = {path: item for path, item in out["paths"].items() if any(m in item for m in spec.METHODS)}
    return out


def build(spec_path: Path = spec.SPEC_PATH, out: Path = postman.COLLECTION_PATH) -> Path:
    public_spec = spec.public(without_streams(spec.load(spec_path)))
    collection = postman.finish(convert(public_spec), public_spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(collection, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=spec.SPEC_PATH)
    parser.add_argument("--out", type=Path, default=postman.COLLECTION_PATH)
    args = parser.parse_args()
    try:
        written = build(args.spec, args.out)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"Postman collection: {written.relative_to(ROOT) if written.is_relative_to(ROOT) else written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
