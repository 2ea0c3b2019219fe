"""Try rules before applying them: replay stored readings through the detector with the
proposed rules and with the current ones, and compare the alerts.

The replay is the service's own: ``Engine.fresh`` and ``Engine.run_slices`` over the same
cuts (every ``slice_ms`` on the grid from the epoch), from a fresh state at ``start_ms``,
as ``tidefield detect run --since`` starts. It scores every series the detector does
(the cross-site checks compare a sensor with the same sensors elsewhere, so scoring only
the chosen sites would change their scores) and reports the chosen sites' alerts. So the
replay of unchanged rules over a period a detector scored from its start reproduces
the alerts that detector stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psycopg

from tidefield.protocol.units import HOUR_MS

from . import store
from .alerts import Alert, MemorySink
from .detector import Detector
from .engine import Engine
from .rules import RuleSet
from .tuning import DetectorParams

CHUNK_MS = HOUR_MS  # readings read per query: memory stays flat over a month


@dataclass(frozen=True, slots=True)
class Replay:
    """Alerts of the chosen sites that opened or closed inside the window."""

    alerts: list[Alert]


def replay(conn: psycopg.Connection, sites: set[str], start_ms: int, end_ms: int,
           rulesets: list[RuleSet], *, slice_ms: int = 60_000, overlap_ms: int = 600_000,
           params: DetectorParams | None = None) -> list[Replay]:
    """One replay per rule set, over the stored readings in (start, end]; one read of
    the readings serves them all. ``slice_ms`` and ``overlap_ms``: the detector's
    (``detect_slice_s``, ``detect_overlap_s``; its first step reads that far back)."""
    series = store.load_series(conn)
    engines = [Engine(Detector(series, params), ruleset) for ruleset in rulesets]
    sinks = [MemorySink() for _ in rulesets]
    keys = [info.key for info in series]
    first = start_ms // slice_ms * slice_ms
    t = first
    while t < end_ms:
        stop = min(end_ms, t + CHUNK_MS) // slice_ms * slice_ms
        stop = max(stop, t + slice_ms)
        readings = store.read_window(conn, keys, t - (overlap_ms if t == first else 0), stop)
        cuts = np.arange(t + slice_ms, stop + 1, slice_ms, dtype=np.int64)
        for engine, sink in zip(engines, sinks, strict=True):
            sink.apply(engine.run_slices(engine.fresh(readings), cuts).ops)
        t = stop
    return [Replay([a for a in sink.alerts if a.key.site_id in sites])
            for sink in sinks]
