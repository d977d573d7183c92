"""Server-rendered SVG charts: geometry computed here, markup written by the templates.

``throughput_chart`` lays out completed and failed attempts per bucket (from
``Client.throughput``) as stacked bars with grid lines; the axis labels are HTML next to the
SVG, so they stay readable however wide the chart is stretched. ``sparkline`` gives the points
of a small line. No script draws anything: the browser receives finished SVG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final, Protocol

import attrs

from monoq.ui.fmt import num

WIDTH: Final = 720.0
HEIGHT: Final = 180.0
TOP: Final = 1.0  # the top grid line stays inside the box
X_LABELS: Final = 5  # spread evenly under the chart


class Bucket(Protocol):
    """What a chart reads of a ``ThroughputBucket``."""

    @property
    def start(self) -> datetime: ...
    @property
    def completed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def dead(self) -> int: ...


@attrs.frozen
class Bar:
    """One bucket: a completed bar with the failed bar stacked on it."""

    x: float
    width: float
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float
    title: str


@attrs.frozen
class Tick:
    """A grid line's height in the SVG and its label."""

    position: float
    label: str


@attrs.frozen
class Chart:
    """Everything the chart template needs."""

    width: float
    height: float
    bars: list[Bar]
    y_ticks: list[Tick]  # top first: the peak, half of it, zero
    x_labels: list[str]  # bucket start times, evenly spread, oldest first
    completed: int
    failed: int
    dead: int
    summary: str


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is >= value (1 at least)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return 10.0 * power  # pragma: no cover - the loop always returns


def throughput_chart(buckets: Sequence[Bucket]) -> Chart:
    """Stacked bars of completed (bottom) and failed (top) per bucket, oldest on the left."""
    plot_h = HEIGHT - TOP
    count = max(len(buckets), 1)
    slot = WIDTH / count
    peak = nice_ceiling(max((b.completed + b.failed for b in buckets), default=0))
    scale = plot_h / peak
    base = HEIGHT
    bars = []
    for index, bucket in enumerate(buckets):
        completed_h = bucket.completed * scale
        failed_h = bucket.failed * scale
        when = bucket.start.strftime("%H:%M UTC")
        title = f"{when}: {num(bucket.completed)} completed, {num(bucket.failed)} failed"
        if bucket.dead:
            title += f" ({num(bucket.dead)} dead)"
        bars.append(Bar(
            x=round(index * slot + slot * 0.15, 2), width=round(slot * 0.7, 2),
            completed_y=round(base - completed_h, 2), completed_h=round(completed_h, 2),
            failed_y=round(base - completed_h - failed_h, 2), failed_h=round(failed_h, 2),
            title=title,
        ))
    y_ticks = [Tick(round(base - plot_h * f, 2), num(peak * f)) for f in (1.0, 0.5, 0.0)]
    x_labels = []
    if buckets:
        picks = sorted({round(i * (len(buckets) - 1) / (X_LABELS - 1)) for i in range(X_LABELS)})
        x_labels = [buckets[i].start.strftime("%H:%M") for i in picks]
    completed = sum(b.completed for b in buckets)
    failed = sum(b.failed for b in buckets)
    dead = sum(b.dead for b in buckets)
    summary = (f"Attempts per minute over the last {len(buckets)} minutes: {num(completed)} "
               f"completed, {num(failed)} failed, {num(dead)} dead-lettered.")
    return Chart(WIDTH, HEIGHT, bars, y_ticks, x_labels, completed, failed, dead, summary)


def sparkline(values: Sequence[int], *, width: float = 120.0, height: float = 24.0) -> str:
    """The ``points`` of an SVG polyline drawing ``values`` left to right."""
    if not values:
        return ""
    peak = max(max(values), 1)
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{round(i * step, 1)},{round(height - 1 - (v / peak) * (height - 2), 1)}"
        for i, v in enumerate(values)
    )
