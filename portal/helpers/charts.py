"""Server-rendered chart geometry: the portal draws SVG from these numbers, no chart library."""

import math
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class Bar:
    day: date
    calls: int
    sandbox_calls: int
    x: float
    width: float
    calls_y: float
    calls_h: float
    sandbox_y: float
    sandbox_h: float


@dataclass(frozen=True)
class DailyChart:
    bars: list[Bar]
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    scale_max: int
    total_calls: int
    total_sandbox: int

    @property
    def gridlines(self) -> list[tuple[float, int]]:
        """(y, value) at 0, half and the top of the scale."""
        span = self.plot_bottom - self.plot_top
        return [(self.plot_bottom - span * f, round(self.scale_max * f)) for f in (0, 0.5, 1)]


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 4 × 10^n at or above `value`, at least 4: halves stay whole numbers."""
    value = max(value, 4)
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 4, 10) if m * magnitude >= value)


def daily_chart(history: list[dict], width: int = 520, height: int = 170) -> DailyChart:
    """Stacked bars (API calls under sandbox calls) for the usage card's daily rows
    (`levqor_core.metering.card.daily_history`)."""
    plot_top, plot_bottom, left, right = 12, height - 24, 44, 8
    scale_max = _nice_ceiling(max((h["calls"] + h["sandbox_calls"] for h in history), default=0))
    slot = (width - left - right) / max(len(history), 1)
    span = plot_bottom - plot_top
    bars = []
    for i, row in enumerate(history):
        calls_h = span * row["calls"] / scale_max
        sandbox_h = span * row["sandbox_calls"] / scale_max
        bars.append(
            Bar(
                day=date.fromisoformat(row["day"]),
                calls=row["calls"],
                sandbox_calls=row["sandbox_calls"],
                x=round(left + i * slot + slot * 0.15, 2),
                width=round(slot * 0.7, 2),
                calls_y=round(plot_bottom - calls_h, 2),
                calls_h=round(calls_h, 2),
                sandbox_y=round(plot_bottom - calls_h - sandbox_h, 2),
                sandbox_h=round(sandbox_h, 2),
            )
        )
    return DailyChart(
        bars=bars,
        width=width,
        height=height,
        plot_top=plot_top,
        plot_bottom=plot_bottom,
        scale_max=scale_max,
        total_calls=sum(h["calls"] for h in history),
        total_sandbox=sum(h["sandbox_calls"] for h in history),
    )


@dataclass(frozen=True)
class HealthBar:
    day: date
    logged: bool  # False: the nightly health log has no entry for that day
    requests: int
    errors: int
    rate_limited: int
    p95_latency_ms: float | None
    job_failures: int
    x: float
    width: float
    requests_y: float
    requests_h: float
    refused_y: float
    refused_h: float


@dataclass(frozen=True)
class HealthChart:
    bars: list[HealthBar]
    width: int
    height: int
    plot_top: int
    plot_bottom: int
    scale_max: int

    gridlines = DailyChart.gridlines

    @property
    def missing(self) -> list[date]:
        return [b.day for b in self.bars if not b.logged]


def health_chart(entries: list[dict], last_day: date, days: int = 30, width: int = 520, height: int = 170):
    """Requests per day from the nightly health log, with their 5xx + 429 share drawn over the
    bottom of each bar; one slot per day up to `last_day`, so a night with no entry leaves a gap."""
    by_day = {e["day"]: e for e in entries}
    plot_top, plot_bottom, left, right = 12, height - 24, 44, 8
    span = plot_bottom - plot_top
    window = [last_day - timedelta(days=days - 1 - i) for i in range(days)]
    scale_max = _nice_ceiling(max((by_day.get(d.isoformat(), {}).get("requests", 0) for d in window), default=0))
    slot = (width - left - right) / days
    bars = []
    for i, day in enumerate(window):
        entry = by_day.get(day.isoformat())
        requests = int((entry or {}).get("requests", 0))
        refused = int((entry or {}).get("errors", 0)) + int((entry or {}).get("rate_limited", 0))
        requests_h = span * requests / scale_max
        refused_h = span * min(refused, requests) / scale_max
        bars.append(
            HealthBar(
                day=day,
                logged=entry is not None,
                requests=requests,
                errors=int((entry or {}).get("errors", 0)),
                rate_limited=int((entry or {}).get("rate_limited", 0)),
                p95_latency_ms=(entry or {}).get("p95_latency_ms"),
                job_failures=int((entry or {}).get("job_failures", 0)),
                x=round(left + i * slot + slot * 0.15, 2),
                width=round(slot * 0.7, 2),
                requests_y=round(plot_bottom - requests_h, 2),
                requests_h=round(requests_h, 2),
                refused_y=round(plot_bottom - refused_h, 2),
                refused_h=round(refused_h, 2),
            )
        )
    return HealthChart(
        bars=bars, width=width, height=height, plot_top=plot_top, plot_bottom=plot_bottom, scale_max=scale_max
    )
