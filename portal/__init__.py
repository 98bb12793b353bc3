"""The developer portal: server-rendered pages and htmx fragments (views/, helpers/, templates/)."""

# tests/test_deprecation.py and tests/test_spec_examples.py still import these from here; kept
# until their imports name portal.helpers.
from portal.helpers import sandbox_calls, snippets  # noqa: E402, F401
