"""A fake Notion API on 127.0.0.1: real HTTP, the endpoints and JSON shapes notion-client 3.1 uses.

Speaks Notion-Version 2025-09-03 (databases hold data sources): pages retrieve/create/update,
blocks/{id}/children list, databases create/retrieve, data_sources retrieve/update/query with
pagination and filters. It enforces a request rate like Notion's (429 + Retry-After when pushed
faster than `rate_per_second`), records whether clients came back before Retry-After elapsed,
and can fail on demand to test interruption and resume.
"""

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "2025-09-03"
_PROPERTY_TYPES = {"title", "rich_text", "number", "select", "date"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _page(parent: dict, properties: dict) -> dict:
    """A new page object as Notion returns it."""
    page_id = str(uuid.uuid4())
    return {
        "object": "page",
        "id": page_id,
        "created_time": _now(),
        "last_edited_time": _now(),
        "in_trash": False,
        "archived": False,
        "parent": parent,
        "properties": properties,
        "url": f"https://www.notion.so/{page_id.replace('-', '')}",
    }


class NotionError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _rich_text(items) -> list[dict]:
    if not isinstance(items, list):
        raise NotionError(400, "validation_error", "rich text must be an array")
    out = []
    for item in items:
        content = ((item or {}).get("text") or {}).get("content")
        if not isinstance(content, str):
            raise NotionError(400, "validation_error", "rich text items need text.content")
        out.append(
            {
                "type": "text",
                "text": {"content": content, "link": None},
                "annotations": {"bold": False, "italic": False, "code": False, "color": "default"},
                "plain_text": content,
                "href": None,
            }
        )
    return out


def plain(value: dict):
    """The comparable content of a stored property value."""
    kind = value["type"]
    if kind in ("title", "rich_text"):
        return "".join(t["plain_text"] for t in value[kind])
    if kind == "select":
        return value["select"]["name"] if value["select"] else None
    if kind == "date":
        return value["date"]["start"] if value["date"] else None
    return value[kind]


class FakeNotion:
    """The state and rules; `NotionServer` puts it on HTTP."""

    def __init__(self, token: str, rate_per_second: float = 1000.0):
        self.token = token
        self.rate_per_second = rate_per_second
        self.lock = threading.RLock()
        self.pages: dict[str, dict] = {}  # every page, including rows of data sources
        self.children: dict[str, list[dict]] = {}  # parent page id -> child blocks
        self.databases: dict[str, dict] = {}
        self.data_sources: dict[str, dict] = {}
        self.rows: dict[str, list[str]] = {}  # data source id -> page ids, in creation order
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request answered
        self.rate_limited = 0  # 429s answered
        self.early_retries = 0  # requests that came back before their Retry-After elapsed
        self._window: list[float] = []
        self._blocked_until = 0.0
        self._fail_after_writes: int | None = None
        self._fail_status = 503
        self._lose_next_create_response = False
        self.writes = 0

    # -- test controls ------------------------------------------------------------------------

    def add_page(self, title: str = "Levqor Ops") -> str:
        title_property = {"id": "title", "type": "title", "title": _rich_text([{"text": {"content": title}}])}
        page = _page({"type": "workspace", "workspace": True}, {"title": title_property})
        with self.lock:
            self.pages[page["id"]] = page
            self.children[page["id"]] = []
        return page["id"]

    def fail_writes_after(self, n: int, status: int = 503) -> None:
        """After `n` more page writes, answer every request with `status` until `recover()`."""
        with self.lock:
            self._fail_after_writes = self.writes + n
            self._fail_status = status

    def recover(self) -> None:
        with self.lock:
            self._fail_after_writes = None

    def lose_next_create_response(self) -> None:
        """Apply the next page create but answer 502, as when a response is lost on the way back."""
        self._lose_next_create_response = True

    def database_named(self, title: str) -> dict | None:
        with self.lock:
            return next(
                (d for d in self.databases.values() if plain({"type": "title", "title": d["title"]}) == title), None
            )

    def rows_of(self, title: str) -> list[dict]:
        """Rows of the database `title` as {property: plain value}, plus `_id`."""
        database = self.database_named(title)
        if database is None:
            return []
        ds_id = database["data_sources"][0]["id"]
        with self.lock:
            return [
                {"_id": pid} | {name: plain(value) for name, value in self.pages[pid]["properties"].items()}
                for pid in self.rows[ds_id]
                if not self.pages[pid]["in_trash"]
            ]

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p in self.requests if m == method and re.fullmatch(pattern, p))

    # -- request handling -----------------------------------------------------------------------

    def handle(self, method: str, path: str, headers, body: dict | None) -> tuple[int, dict, dict]:
        try:
            self._admit(headers)
            with self.lock:
                self._maybe_fail(method, path)
                result = self._route(method, path, body or {})
                self.requests.append((method, path))
                return 200, result, {}
        except NotionError as err:
            payload = {"object": "error", "status": err.status, "code": err.code, "message": err.message}
            payload["request_id"] = str(uuid.uuid4())
            return err.status, payload, err.headers

    def _admit(self, headers) -> None:
        if headers.get("Authorization") != f"Bearer {self.token}":
            raise NotionError(401, "unauthorized", "API token is invalid.")
        if headers.get("Notion-Version") != VERSION:
            raise NotionError(400, "missing_version", f"Notion-Version must be {VERSION}.")
        with self.lock:
            now = time.monotonic()
            if now < self._blocked_until:
                self.early_retries += 1
                self.rate_limited += 1
                wait = max(1, int(self._blocked_until - now + 0.999))
                raise NotionError(429, "rate_limited", "Retried before Retry-After.", {"Retry-After": str(wait)})
            self._window = [t for t in self._window if now - t < 1.0]
            if len(self._window) >= self.rate_per_second:
                self.rate_limited += 1
                # A small grace so a client that sleeps exactly Retry-After is not counted early.
                self._blocked_until = now + 1.0 - 0.05
                raise NotionError(429, "rate_limited", "You have been rate limited.", {"Retry-After": "1"})
            self._window.append(now)

    def _maybe_fail(self, method: str, path: str) -> None:
        if self._fail_after_writes is not None and self.writes >= self._fail_after_writes:
            code = {500: "internal_server_error", 502: "bad_gateway", 503: "service_unavailable"}.get(
                self._fail_status, "validation_error"
            )
            raise NotionError(self._fail_status, code, "Failing on demand.")

    def _route(self, method: str, path: str, body: dict) -> dict:
        parts = path.strip("/").split("/")
        if parts[0] != "v1":
            raise NotionError(400, "invalid_request_url", "Invalid request URL.")
        parts = parts[1:]
        match (method, parts):
            case ("GET", ["pages", page_id]):
                return self._page(page_id)
            case ("POST", ["pages"]):
                return self._create_page(body)
            case ("PATCH", ["pages", page_id]):
                return self._update_page(page_id, body)
            case ("GET", ["blocks", block_id, "children"]):
                return self._list(self._children_of(block_id), None, 100)
            case ("POST", ["databases"]):
                return self._create_database(body)
            case ("GET", ["databases", database_id]):
                if database_id not in self.databases:
                    raise NotionError(404, "object_not_found", f"Could not find database with ID: {database_id}.")
                return self.databases[database_id]
            case ("GET", ["data_sources", ds_id]):
                return self._data_source(ds_id)
            case ("PATCH", ["data_sources", ds_id]):
                return self._update_data_source(ds_id, body)
            case ("POST", ["data_sources", ds_id, "query"]):
                return self._query(ds_id, body)
        raise NotionError(400, "invalid_request_url", f"Invalid request URL: {method} {path}")

    # -- objects ------------------------------------------------------------------------------------

    def _page(self, page_id: str) -> dict:
        page = self.pages.get(page_id)
        if page is None:
            raise NotionError(404, "object_not_found", f"Could not find page with ID: {page_id}.")
        return page

    def _children_of(self, block_id: str) -> list[dict]:
        if block_id not in self.children:
            raise NotionError(404, "object_not_found", f"Could not find block with ID: {block_id}.")
        return self.children[block_id]

    def _data_source(self, ds_id: str) -> dict:
        ds = self.data_sources.get(ds_id)
        if ds is None:
            raise NotionError(404, "object_not_found", f"Could not find data source with ID: {ds_id}.")
        return ds

    def _schema(self, properties: dict) -> dict:
        schema = {}
        for name, spec in (properties or {}).items():
            kinds = [k for k in spec if k in _PROPERTY_TYPES]
            if len(kinds) != 1:
                raise NotionError(400, "validation_error", f"Property {name!r} needs one supported type.")
            kind = kinds[0]
            config = dict(spec[kind] or {})
            if kind == "select":
                config = {"options": [o | {"id": str(uuid.uuid4())} for o in config.get("options", [])]}
            schema[name] = {
                "id": "title" if kind == "title" else uuid.uuid4().hex[:4],
                "name": name,
                "type": kind,
                kind: config,
            }
        if sum(1 for p in schema.values() if p["type"] == "title") != 1:
            raise NotionError(400, "validation_error", "A data source needs exactly one title property.")
        return schema

    def _create_database(self, body: dict) -> dict:
        parent = body.get("parent") or {}
        page_id = parent.get("page_id")
        if parent.get("type") != "page_id" or page_id not in self.pages:
            raise NotionError(404, "object_not_found", f"Could not find page with ID: {page_id}.")
        title = _rich_text(body.get("title") or [])
        schema = self._schema((body.get("initial_data_source") or {}).get("properties"))
        db_id, ds_id = str(uuid.uuid4()), str(uuid.uuid4())
        name = "".join(t["plain_text"] for t in title)
        database = {
            "object": "database",
            "id": db_id,
            "title": title,
            "parent": {"type": "page_id", "page_id": page_id},
            "is_inline": False,
            "in_trash": False,
            "created_time": _now(),
            "last_edited_time": _now(),
            "data_sources": [{"id": ds_id, "name": name}],
            "url": f"https://www.notion.so/{db_id.replace('-', '')}",
        }
        self.databases[db_id] = database
        self.data_sources[ds_id] = {
            "object": "data_source",
            "id": ds_id,
            "title": title,
            "parent": {"type": "database_id", "database_id": db_id},
            "database_parent": {"type": "page_id", "page_id": page_id},
            "properties": schema,
            "created_time": _now(),
            "last_edited_time": _now(),
        }
        self.rows[ds_id] = []
        self.children[page_id].append(
            {
                "object": "block",
                "id": db_id,
                "type": "child_database",
                "child_database": {"title": name},
                "has_children": False,
                "in_trash": False,
            }
        )
        return database

    def _update_data_source(self, ds_id: str, body: dict) -> dict:
        ds = self._data_source(ds_id)
        added = self._schema(
            {**{n: {p["type"]: p[p["type"]]} for n, p in ds["properties"].items()}, **(body.get("properties") or {})}
        )
        ds["properties"] = added
        return ds

    def _values(self, ds: dict, properties: dict, partial: bool) -> dict:
        schema = ds["properties"]
        values = {}
        for name, value in (properties or {}).items():
            if name not in schema:
                raise NotionError(400, "validation_error", f"{name} is not a property that exists.")
            kind = schema[name]["type"]
            if kind not in value:
                raise NotionError(400, "validation_error", f"{name} is expected to be {kind}.")
            raw = value[kind]
            if kind in ("title", "rich_text"):
                stored = _rich_text(raw)
            elif kind == "number":
                if raw is not None and not isinstance(raw, int | float):
                    raise NotionError(400, "validation_error", f"{name} is expected to be a number.")
                stored = raw
            elif kind == "select":
                stored = None if raw is None else {"id": uuid.uuid4().hex[:8], "name": raw["name"], "color": "default"}
            else:
                stored = None if raw is None else {"start": raw["start"], "end": raw.get("end"), "time_zone": None}
            values[name] = {"id": schema[name]["id"], "type": kind, kind: stored}
        if not partial:
            for name, prop in schema.items():
                empty = [] if prop["type"] in ("title", "rich_text") else None
                values.setdefault(name, {"id": prop["id"], "type": prop["type"], prop["type"]: empty})
        return values

    def _create_page(self, body: dict) -> dict:
        parent = body.get("parent") or {}
        ds_id = parent.get("data_source_id")
        if ds_id is None and parent.get("database_id") in self.databases:
            ds_id = self.databases[parent["database_id"]]["data_sources"][0]["id"]
        ds = self._data_source(ds_id)
        page = _page(
            {"type": "data_source_id", "data_source_id": ds_id, "database_id": ds["parent"]["database_id"]},
            self._values(ds, body.get("properties"), partial=False),
        )
        self.pages[page["id"]] = page
        self.rows[ds_id].append(page["id"])
        self.writes += 1
        if self._lose_next_create_response:
            self._lose_next_create_response = False
            raise NotionError(502, "bad_gateway", "The response was lost on the way back.")
        return page

    def _update_page(self, page_id: str, body: dict) -> dict:
        page = self._page(page_id)
        ds_id = page["parent"].get("data_source_id")
        if ds_id:
            page["properties"].update(self._values(self.data_sources[ds_id], body.get("properties"), partial=True))
        if "in_trash" in body:
            page["in_trash"] = bool(body["in_trash"])
        page["last_edited_time"] = _now()
        self.writes += 1
        return page

    def _matches(self, page: dict, filt: dict | None) -> bool:
        if not filt:
            return True
        if "and" in filt:
            return all(self._matches(page, f) for f in filt["and"])
        if "or" in filt:
            return any(self._matches(page, f) for f in filt["or"])
        prop = page["properties"].get(filt.get("property"))
        if prop is None:
            raise NotionError(400, "validation_error", f"Could not find property {filt.get('property')!r}.")
        condition = filt.get(prop["type"])
        if not isinstance(condition, dict) or len(condition) != 1:
            raise NotionError(400, "validation_error", f"Filter on {prop['type']} property needs one condition.")
        ((op, operand),) = condition.items()
        value = plain(prop)
        if op == "equals":
            return value == operand
        if op == "does_not_equal":
            return value != operand
        if op == "is_empty":
            return value in (None, "")
        if op == "is_not_empty":
            return value not in (None, "")
        raise NotionError(400, "validation_error", f"Unsupported filter condition {op!r}.")

    def _query(self, ds_id: str, body: dict) -> dict:
        self._data_source(ds_id)
        pages = [self.pages[p] for p in self.rows[ds_id] if not self.pages[p]["in_trash"]]
        pages = [p for p in pages if self._matches(p, body.get("filter"))]
        page_size = body.get("page_size", 100)
        if not isinstance(page_size, int) or not 1 <= page_size <= 100:
            raise NotionError(400, "validation_error", "page_size should be between 1 and 100.")
        return self._list(pages, body.get("start_cursor"), page_size, kind="page_or_data_source")

    def _list(self, items: list[dict], cursor: str | None, page_size: int, kind: str = "block") -> dict:
        start = 0
        if cursor:
            ids = [i["id"] for i in items]
            if cursor not in ids:
                raise NotionError(400, "validation_error", "start_cursor is not valid.")
            start = ids.index(cursor)
        chunk = items[start : start + page_size]
        more = start + page_size < len(items)
        return {
            "object": "list",
            "results": chunk,
            "next_cursor": items[start + page_size]["id"] if more else None,
            "has_more": more,
            "type": kind,
            kind: {},
            "request_id": str(uuid.uuid4()),
        }


class NotionServer:
    """`FakeNotion` served over HTTP on 127.0.0.1 in a background thread."""

    def __init__(self, token: str = "secret_test_token", rate_per_second: float = 1000.0):  # noqa: S107
        self.fake = FakeNotion(token, rate_per_second)
        fake = self.fake

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    status, payload, headers = 400, {"object": "error", "status": 400, "code": "invalid_json"}, {}
                else:
                    status, payload, headers = fake.handle(self.command, self.path.split("?")[0], self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> "NotionServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
