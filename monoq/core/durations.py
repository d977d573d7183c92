"""Durations as people write them in config files, flags and forms: ``300``, ``30s``, ``5m``,
``1h30m``, ``500ms``."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

_DURATION_UNITS: Final[Mapping[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a plain number of seconds, or number+unit parts (ms, s, m, h, d).

    ``"300"`` -> 300.0, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"500ms"`` -> 0.5,
    ``"1m30s"`` -> 90.0, ``"1.5h"`` -> 5400.0. Case and surrounding spaces are ignored. Negative,
    empty or non-finite values raise ``ValueError``.
    """
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
        pos = 0
        total = 0.0
        for match in _DURATION_PART.finditer(raw):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if raw and pos == len(raw):
            seconds = total
    else:
        # "nan", "inf" and "-5" parse as floats but are not durations.
        if not math.isfinite(seconds):
            seconds = -1.0
    if seconds < 0:
        raise ValueError(
            f"{text!r} is not a duration: use seconds (300) or parts like 30s, 5m, 1h, 1d, "
            "500ms, 1m30s"
        )
    return seconds
