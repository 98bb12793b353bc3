"""Notion, through notion-client (API version 2025-09-03: databases hold data sources).

Every call goes through `Notion.call`, which keeps under NOTION_MAX_RPS (Notion allows about
three requests a second), waits out a 429's Retry-After, and retries transient failures
(5xx, timeouts, dropped connections) with exponential backoff through tenacity. The client's
own retry loop is switched off so there is one retry policy, and so a page create is never
blindly repeated: `create_row` looks for the row before trying again.

The databases the jobs write to are found (or created) by title under NOTION_PARENT_PAGE_ID and
remembered in `notion_databases`.
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime

import httpx
from flask import current_app
from notion_client import Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from levqor_core import tiers
from levqor_core.extensions import db
from levqor_core.ops.models import NotionDatabase

log = logging.getLogger(__name__)

# The account columns every Levqor database in Notion carries (key usage, quota alerts).
ACCOUNT_PROPERTIES = {
    "User ID": {"rich_text": {}},
    "Tier": {"select": {"options": [{"name": name} for name in tiers.TIERS]}},
}


class NotionUnavailable(Exception):
    """Notion kept failing (or refused the request); the job can simply be run again."""


def is_configured(app=None) -> bool:
    config = (app or current_app).config
    return bool(config.get("NOTION_TOKEN") and config.get("NOTION_PARENT_PAGE_ID"))


def from_app(app=None) -> "Notion | None":
    """A Notion gateway from the app's settings; None (after saying why in the log) without a token."""
    config = (app or current_app).config
    if not config.get("NOTION_TOKEN"):
        log.warning("NOTION_TOKEN is not set: skipping Notion work")
        return None
    if not config.get("NOTION_PARENT_PAGE_ID"):
        log.warning("NOTION_PARENT_PAGE_ID is not set: skipping Notion work (the databases need a parent page)")
        return None
    return Notion(
        token=config["NOTION_TOKEN"],
        parent_page_id=config["NOTION_PARENT_PAGE_ID"],
        base_url=config.get("NOTION_BASE_URL") or "https://api.notion.com",
        max_rps=float(config.get("NOTION_MAX_RPS", 3)),
        max_attempts=int(config.get("NOTION_MAX_ATTEMPTS", 6)),
        max_backoff=float(config.get("NOTION_MAX_BACKOFF_SECONDS", 30)),
    )


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, HTTPResponseError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, RequestTimeoutError | httpx.TransportError)


def _retry_after(exc: BaseException | None) -> float | None:
    if isinstance(exc, HTTPResponseError) and exc.status == 429:
        try:
            return max(0.0, float(exc.headers.get("retry-after", "")))
        except ValueError:
            return 1.0
    return None


class Notion:
    def __init__(
        self,
        token: str,
        parent_page_id: str,
        base_url: str,
        max_rps: float = 3.0,
        max_attempts: int = 6,
        max_backoff: float = 30.0,
    ):
        self.client = Client(auth=token, base_url=base_url.rstrip("/"), retry=False, timeout_ms=30_000)
        self.parent_page_id = parent_page_id
        self.min_interval = 1.0 / max_rps if max_rps > 0 else 0.0
        self.max_attempts = max_attempts
        self._backoff = wait_exponential_jitter(initial=0.5, max=max_backoff)
        self._next_slot = 0.0
        self._lock = threading.Lock()
        self.stats: Counter = Counter()  # requests, rate_limited, retries

    # -- the one door -------------------------------------------------------------------------

    def _throttle(self) -> None:
        if not self.min_interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.min_interval
        if slot > now:
            time.sleep(slot - now)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = _retry_after(exc)
        if after is not None:
            self.stats["rate_limited"] += 1
            # Nothing else goes out before Notion said we may come back.
            with self._lock:
                self._next_slot = max(self._next_slot, time.monotonic() + after)
            return after
        return self._backoff(state)

    def call(self, fn, *args, before_retry=None, **kwargs):
        """Run one notion-client call under the rate limit and retry policy.

        `before_retry(exc)` runs before a retry that follows a non-429 failure and may return a
        result to use instead of repeating the call (how creates avoid duplicates)."""

        def attempt():
            state = attempt.state
            if state["last"] is not None and before_retry is not None and _retry_after(state["last"]) is None:
                found = before_retry(state["last"])
                if found is not None:
                    return found
            self._throttle()
            self.stats["requests"] += 1
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                state["last"] = exc
                raise

        attempt.state = {"last": None}

        def note_retry(state: RetryCallState) -> None:
            self.stats["retries"] += 1
            exc = state.outcome.exception()
            log.info("notion call failed (%s), retrying in %.1fs", exc, state.upcoming_sleep)

        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            before_sleep=note_retry,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Exception as exc:
            if _transient(exc) or isinstance(exc, HTTPResponseError):
                raise NotionUnavailable(f"Notion request failed: {exc}") from exc
            raise

    # -- databases ----------------------------------------------------------------------------

    def ensure_database(self, title: str, properties: dict) -> str:
        """The data source id of the database `title` under the parent page; created if missing,
        missing properties added if someone removed them."""
        known = db.session.get(NotionDatabase, title)
        if known and known.parent_page_id == self.parent_page_id:
            try:
                source = self.call(self.client.data_sources.retrieve, known.data_source_id)
            except NotionUnavailable as err:
                if getattr(err.__cause__, "status", None) != 404:
                    raise
                source = None  # deleted in Notion: find or create it again
            if source is not None and not source.get("in_trash"):
                self._add_missing_properties(source, properties)
                return known.data_source_id
        database = self._find_child_database(title)
        if database is None:
            database = self.call(
                self.client.databases.create,
                parent={"type": "page_id", "page_id": self.parent_page_id},
                title=[{"type": "text", "text": {"content": title}}],
                initial_data_source={"properties": properties},
            )
            log.info("created the Notion database %r (%s)", title, database["id"])
        else:
            source = self.call(self.client.data_sources.retrieve, database["data_sources"][0]["id"])
            self._add_missing_properties(source, properties)
        ds_id = database["data_sources"][0]["id"]
        row = known or NotionDatabase(name=title)
        row.parent_page_id, row.database_id, row.data_source_id = self.parent_page_id, database["id"], ds_id
        db.session.add(row)
        db.session.commit()
        return ds_id

    def _find_child_database(self, title: str) -> dict | None:
        cursor = None
        while True:
            kwargs = {"start_cursor": cursor} if cursor else {}
            page = self.call(self.client.blocks.children.list, self.parent_page_id, page_size=100, **kwargs)
            for block in page["results"]:
                is_database = block.get("type") == "child_database" and not block.get("in_trash")
                if is_database and block["child_database"].get("title") == title:
                    return self.call(self.client.databases.retrieve, block["id"])
            if not page.get("has_more"):
                return None
            cursor = page["next_cursor"]

    def _add_missing_properties(self, source: dict, properties: dict) -> None:
        missing = {name: spec for name, spec in properties.items() if name not in source.get("properties", {})}
        if missing:
            self.call(self.client.data_sources.update, source["id"], properties=missing)

    # -- rows ---------------------------------------------------------------------------------

    def rows(self, data_source_id: str, filter: dict | None = None) -> Iterator[dict]:
        """Every row of a data source (optionally filtered), following the pagination."""
        cursor = None
        while True:
            kwargs = {"page_size": 100}
            if cursor:
                kwargs["start_cursor"] = cursor
            if filter:
                kwargs["filter"] = filter
            page = self.call(self.client.data_sources.query, data_source_id, **kwargs)
            yield from page["results"]
            if not page.get("has_more"):
                return
            cursor = page["next_cursor"]

    def find_row(self, data_source_id: str, title_property: str, title: str) -> dict | None:
        """The first row whose title (the `title_property` column) is `title`; None when there is none."""
        matches = self.rows(data_source_id, filter={"property": title_property, "title": {"equals": title}})
        return next(matches, None)

    def create_row(self, data_source_id: str, properties: dict, title_property: str) -> dict:
        """Create a row; when a failed attempt may still have landed, look for it before retrying."""
        title = text_of(properties[title_property])

        def find_landed(_exc):
            return self.find_row(data_source_id, title_property, title)

        return self.call(
            self.client.pages.create,
            parent={"type": "data_source_id", "data_source_id": data_source_id},
            properties=properties,
            before_retry=find_landed,
        )

    def update_row(self, page_id: str, properties: dict) -> dict:
        return self.call(self.client.pages.update, page_id, properties=properties)

    def trash_row(self, page_id: str) -> dict:
        """Move a row to Notion's trash (restorable there for 30 days, then gone)."""
        return self.call(self.client.pages.update, page_id, in_trash=True)


# -- property values ---------------------------------------------------------------------------


def title(text: str) -> dict:
    return {"title": [{"type": "text", "text": {"content": text}}]}


def rich_text(text: str) -> dict:
    return {"rich_text": [{"type": "text", "text": {"content": text}}]}


def number(value: int | float | None) -> dict:
    return {"number": value}


def select(name: str | None) -> dict:
    return {"select": {"name": name} if name else None}


def date_value(value: datetime | date | None) -> dict:
    return {"date": {"start": value.isoformat()} if value else None}


def text_of(value: dict) -> str:
    """The plain text of a title or rich-text value, as we send it or as Notion returns it."""
    items = value.get("title", value.get("rich_text")) or []
    return "".join(i.get("plain_text") or i.get("text", {}).get("content", "") for i in items)


def row_title(page: dict, title_property: str) -> str:
    """The title of a row as Notion returns it ('' when the row has none)."""
    return text_of(page["properties"].get(title_property, {}))


def plain(value: dict):
    """A property value as Notion returns it, reduced to what we compare."""
    kind = value.get("type")
    if kind in ("title", "rich_text"):
        return text_of(value)
    if kind == "number":
        return value["number"]
    if kind == "select":
        return (value.get("select") or {}).get("name")
    if kind == "date":
        return (value.get("date") or {}).get("start")
    return None
