"""How the portal writes times and waits, in its texts and (as Jinja filters `when` and
`duration`, registered in portal/views/__init__.py) in its templates."""

from datetime import datetime


def when(at: datetime) -> str:
    """A moment: "05 Dec, 14:30 UTC"."""
    return at.strftime("%d %b, %H:%M UTC")


def duration(seconds: float) -> str:
    """A wait in words: "3 h 12 min", "45 s"."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
