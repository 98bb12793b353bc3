"""Where the API lives: under the spec's first server URL, `/api` (tests/test_spec_contract.py
holds the two equal). Everything under it answers problem+json; everything else is the portal."""

API_BASE = "/api"


def is_api_path(path: str) -> bool:
    return path == API_BASE or path.startswith(API_BASE + "/")
