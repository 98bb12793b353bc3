"""The developer portal: server-rendered pages and htmx fragments."""
