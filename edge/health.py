"""What the agent measures about itself: memory, CPU, publish latency.

Standard library only (``/proc`` on Linux, ``resource`` elsewhere): no psutil on the edge.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time


def rss_mb() -> float:
    """Resident memory now, in MB (peak resident memory where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes vs KiB


class CpuMeter:
    """Share of one core used by this process between calls, in percent."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float]:
        return time.process_time(), time.monotonic()  # user + system, every thread

    def percent(self) -> float:
        cpu, wall = self._sample()
        last_cpu, last_wall = self._last
        self._last = (cpu, wall)
        return 100.0 * (cpu - last_cpu) / (wall - last_wall) if wall > last_wall else 0.0


class LatencyMeter:
    """Publish-to-PUBACK latencies, averaged over each reporting interval."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total_s = 0.0
        self._count = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._total_s += seconds
            self._count += 1

    def mean_ms(self) -> float | None:
        """Mean since the last call (None: nothing was acknowledged meanwhile)."""
        with self._lock:
            total, count = self._total_s, self._count
            self._total_s, self._count = 0.0, 0
        return 1000.0 * total / count if count else None
