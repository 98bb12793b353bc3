"""What the request log's detail shows of a call's query and bodies: never a key, a webhook secret
or a password-like field, even where the caller put one by mistake.

The recorder already drops full API keys before storing (levqor_core.requestlog.recorder); this is
the portal's own pass at display time, which also covers webhook secrets, password-, secret- and
token-named fields, and bodies cut mid-way (which no JSON parser would read)."""

import re

_KEY = re.compile(r"lvq_[0-9a-f]{6,32}(?:_[0-9A-Za-z]{0,6})?")
_WEBHOOK_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")
_SENSITIVE = r"[^\"]*(?:password|passwd|secret|token|api[_-]?key|authorization|credential)[^\"]*"
_JSON_FIELD = re.compile(rf'("{_SENSITIVE}"\s*:\s*)"(?:[^"\\]|\\.)*("|$)', re.I)
_QUERY_FIELD = re.compile(r"((?:^|&)[^=&]*(?:password|secret|token|api[_-]?key)[^=&]*=)[^&]*", re.I)
REDACTED = "(redacted)"


def text(value: str | None) -> str:
    """A body or a query as it may be shown."""
    if not value:
        return ""
    value = _KEY.sub("lvq_…" + REDACTED, value)
    value = _WEBHOOK_SECRET.sub("whsec_…" + REDACTED, value)
    value = _JSON_FIELD.sub(lambda m: f'{m.group(1)}"{REDACTED}"', value)
    return _QUERY_FIELD.sub(lambda m: m.group(1) + REDACTED, value)
