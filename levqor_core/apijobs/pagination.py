"""Cursor pagination for the job listings (`/v1/jobs` and `/sandbox/v1/jobs`).

A cursor is opaque to the caller: a listing's kind letter and a position in that listing,
base64url. The letter keeps one listing's cursor from being taken by another ("j" for production
jobs, "s" for sandbox jobs), and each listing says which positions are ones it gave out."""

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from levqor_core.apijobs.problems import InvalidCursor

Row = TypeVar("Row")


@dataclass(frozen=True)
class Cursors:
    """The cursors of one listing: its kind letter, and the test a position must pass."""

    kind: str
    valid: Callable[[str], bool]

    def encode(self, position: str) -> str:
        return base64.urlsafe_b64encode(f"{self.kind}{position}".encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> str:
        """The position in a cursor of this listing, or InvalidCursor (400) for anything else."""
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            text = ""
        if not (text[:1] == self.kind and self.valid(text[1:])):
            raise InvalidCursor("Pass back the next_cursor of a previous page unchanged.")
        return text[1:]


def page(
    rows: Sequence[Row], limit: int, cursors: Cursors, position: Callable[[Row], str], show: Callable[[Row], dict]
) -> dict:
    """A listing's page from the rows found past the cursor, up to `limit` + 1 of them: the first
    `limit` shown, and a cursor to the rest when there were more."""
    shown, more = rows[:limit], len(rows) > limit
    return {
        "data": [show(row) for row in shown],
        "has_more": more,
        "next_cursor": cursors.encode(position(shown[-1])) if more else None,
    }
