"""Simulated history written straight into the database, for `tidefield up` and demos.

The fleet's readings of [start, end) are generated an hour at a time (constant memory),
mapped to series ids, and written with ``Store.write_history``: readings and rollups in
one transaction per window, rows already there skipped. So a backfill can be re-run or
overlap live data, and it leaves ingest's per-device sequence bookkeeping alone.

Generation (Numba, one core) and COPY (the database's other core) overlap: the next
window is generated while the previous one is written.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import psycopg

from tidefield.protocol.units import HOUR_MS
from tidefield.server.db import scalar
from tidefield.server.ingest.store import Store

if TYPE_CHECKING:
    from tidefield.sim.fleet import Fleet

log = logging.getLogger(__name__)


Progress = Callable[[int, int], None]  # (readings written, ms of history done)


@dataclass(frozen=True, slots=True)
class BackfillResult:
    generated: int
    inserted: int


def series_ids(conn: psycopg.Connection, fleet: Fleet) -> np.ndarray:
    """The database series id of every fleet series index (-1: not in the registry)."""
    known = {(device, metric): sid for sid, device, metric in conn.execute(
        "SELECT id, device_id, metric FROM series")}
    table = fleet.table
    return np.array([known.get((table.device_ids[s], table.metrics[s]), -1)
                     for s in range(len(table))], dtype=np.int32)


def latest_history_ms(conn: psycopg.Connection, since_ms: int) -> int | None:
    """The newest reading time after ``since_ms``, from the hourly rollup (a small table,
    so this is cheap however many readings there are); None when there is none."""
    newest = scalar(conn.execute("SELECT max(last_time) FROM readings_1h WHERE bucket >= "
                                 "to_timestamp(%s / 1000.0) - interval '1 hour'", (since_ms,)))
    if newest is None:
        return None
    return int(newest.timestamp() * 1000)


def backfill(database_url: str, fleet: Fleet, start_ms: int, end_ms: int, *,
             window_ms: int = HOUR_MS, progress: Progress | None = None,
             stop: threading.Event | None = None) -> BackfillResult:
    """Write the fleet's readings of [start_ms, end_ms); stops early when ``stop`` is set."""
    stop = stop or threading.Event()
    halt = threading.Event()  # ours: the writer has left, the producer should too
    windows: queue.Queue = queue.Queue(maxsize=2)

    def generate() -> None:
        try:
            for chunk in fleet.chunks(start_ms, end_ms, window_ms):
                if stop.is_set() or halt.is_set():
                    break
                windows.put(chunk)
        finally:
            windows.put(None)

    generated = inserted = 0
    producer = threading.Thread(target=generate, name="backfill-generate", daemon=True)
    with psycopg.connect(database_url) as conn:
        ids = series_ids(conn, fleet)
        store = Store(conn)
        producer.start()
        while (chunk := windows.get()) is not None:
            sid = ids[chunk.series]
            keep = sid >= 0
            generated += len(chunk)
            inserted += store.write_history(sid[keep], chunk.time_ms[keep], chunk.value[keep])
            if progress is not None:
                progress(inserted, chunk.end_ms - start_ms)
            if stop.is_set():
                break
    halt.set()
    while producer.is_alive():  # drain, so a producer blocked on put() can finish
        with contextlib.suppress(queue.Empty):
            windows.get(timeout=0.1)
    log.info("backfill done", extra={"generated": generated, "inserted": inserted})
    return BackfillResult(generated, inserted)
