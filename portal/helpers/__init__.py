"""Portal-only helpers the views use: SVG charts, code snippets and SDK examples, sandbox runs, how times
and waits are written."""
