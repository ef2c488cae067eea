"""The proxy's one clock: wall time (what entries, buckets and quotas are stamped with) and a
monotonic one (deadlines), read here by every module so that a test can move time forward
instead of sleeping (``advance``). Durations measured for logs and metrics use
``time.perf_counter`` directly: they are never compared with either clock. Redis's scripts read
Redis's own clock (one for every instance), which this one cannot move.
"""

from __future__ import annotations

import time

_offset = 0.0  # seconds added to both clocks; only tests change it


def now() -> float:
    """Seconds since the epoch."""
    return time.time() + _offset


def monotonic() -> float:
    """Seconds on a clock that never goes back, for deadlines and leases."""
    return time.monotonic() + _offset


def advance(seconds: float) -> None:
    """Move both clocks forward (tests only): what would expire in ``seconds`` has."""
    global _offset
    if seconds < 0:
        raise ValueError("the clock only moves forward")
    _offset += seconds


def reset() -> None:
    """Back to real time (tests only)."""
    global _offset
    _offset = 0.0
