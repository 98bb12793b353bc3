"""Portal-only helpers the views use: SVG charts, code snippets and SDK examples, sandbox runs, forms."""
