"""Template filters: times, ages, durations and counts as an operator reads them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime


def utc(value: datetime | None) -> str:
    """``2024-05-01 12:00:03 UTC``; ``—`` for None."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | None) -> str:
    """RFC 3339 for ``<time datetime=…>``."""
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dt(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 string (as ``Client.schedule_status`` gives times) as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def span(seconds: float) -> str:
    """A length of time in the largest units that read well: ``850 ms``, ``12 s``,
    ``3 min 4 s``, ``5 h 2 min``, ``3 d 4 h``."""
    if math.isnan(seconds):
        return "—"
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(value: datetime | None, now: datetime) -> str:
    """``12 s ago`` or ``in 3 min`` relative to ``now``; ``—`` for None."""
    if value is None:
        return "—"
    delta = (now - value).total_seconds()
    if abs(delta) < 1:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def num(value: float | None) -> str:
    """A count with thin-space thousands separators: ``12 345``."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}".replace(",", "\u202f")
    return f"{int(value):,}".replace(",", "\u202f")


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
