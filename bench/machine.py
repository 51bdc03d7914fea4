"""The machine the numbers come from: load average, waiting for quiet, statistics."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def wait_for_quiet(
    max_load: float, max_wait_seconds: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``max_wait``).

    Returns what was seen: the load when measuring starts and whether it was quiet.
    """
    started = time.monotonic()
    told = 0.0
    while True:
        load = os.getloadavg()[0]
        waited = time.monotonic() - started
        if load < max_load:
            return {
                "quiet": True,
                "waited_seconds": round(waited, 1),
                "load_average": load_average(),
            }
        if waited >= max_wait_seconds:
            say(f"  load {load:.2f} still >= {max_load} after {waited:.0f} s: measuring anyway")
            return {
                "quiet": False,
                "waited_seconds": round(waited, 1),
                "load_average": load_average(),
            }
        if waited - told >= 60 or told == 0:
            say(f"  waiting for a quiet machine: 1-min load {load:.2f} (want < {max_load})")
            told = waited or 0.001
        time.sleep(5)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest-rank on the sorted values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def ratio(value: float, floor: float) -> float | None:
    if not floor or math.isnan(value) or math.isnan(floor):
        return None
    return round(value / floor, 3)
