"""firmware-sim backfill throughput on one core, against a plain NumPy baseline.

    .venv/bin/python bench/sim.py [--days 2] [--seed 7] [--cpu 0]

The whole 250-site fleet (2,793 series, ~2.66 million readings a day), generated in
6-hour chunks exactly as ``tidefield sim scenario`` does:

1. baseline: plain NumPy making the same number of values, the least a generator could
   do: standard normal noise plus a sine of the time, in the same chunk sizes, into the
   same three columns (series index, time, value).
2. clean: ``Fleet.generate`` without injection: every physical model, sensor noise,
   clipping and quantisation, interleaved into time order.
3. injected: the same with the scenario's labelled faults and events (planning, which
   happens once per 30-day epoch, is timed on its own line).
4. to Parquet: the injected scenario written to a file, end to end.

The process is pinned to one CPU. Compilation is done (or loaded from Numba's cache)
before anything is timed; each generation row is the fastest of ``--repeat`` runs. Rates
are readings per second of wall time; CPU seconds are shown too, since a busy machine
shows up as wall time above CPU time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tidefield.protocol.units import DAY_MS
from tidefield.sim.fleet import DEFAULT_CHUNK_MS, Fleet
from tidefield.sim.scenario import scenario_plan, write_scenario

START_MS = 1_743_465_600_000  # 2025-04-01T00:00Z, the scenario command's default


def pin_to_one_cpu(cpu: int) -> str:
    try:
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed
        return f"not pinned ({exc})"


def timed(run, repeat: int = 1) -> tuple[int, float, float]:
    """(result, wall s, CPU s) of the fastest of ``repeat`` runs."""
    best = None
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        count = run()
        took = (count, time.perf_counter() - wall, time.process_time() - cpu)
        best = took if best is None or took[1] < best[1] else best
    return best


def numpy_baseline(readings_per_chunk: list[int], n_series: int) -> int:
    """The same columns, filled with noise and a sine (NumPy does not skip unused work)."""
    rng = np.random.default_rng(0)
    done = 0
    for i, n in enumerate(readings_per_chunk):
        series = np.arange(n, dtype=np.int32) % n_series
        times = START_MS + i * DEFAULT_CHUNK_MS + np.arange(n, dtype=np.int64)
        values = rng.standard_normal(n) + np.sin(times * 1e-7)
        done += min(series.size, times.size, values.size)
    return done


def table(rows: list[tuple], headers: tuple[str, ...]) -> str:
    cells = [headers, *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=2.0, help="window length (days)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin the process to")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    args = parser.parse_args()
    pinned = pin_to_one_cpu(args.cpu)
    end_ms = START_MS + round(args.days * DAY_MS)

    clean = Fleet(seed=args.seed)
    plan = scenario_plan(START_MS, START_MS + 30 * DAY_MS)
    injected = Fleet(seed=args.seed, plan=plan)
    warm_wall = time.perf_counter()
    clean.generate(START_MS, START_MS + 600_000)  # compile, or load the cache
    warm_wall = time.perf_counter() - warm_wall

    def generate(fleet: Fleet) -> int:
        return sum(len(chunk) for chunk in fleet.chunks(START_MS, end_ms))

    rows = []
    n, wall, cpu = timed(lambda: generate(clean), args.repeat)
    per_chunk = [len(c) for c in clean.chunks(START_MS, START_MS + DEFAULT_CHUNK_MS)]
    chunks = -(-(end_ms - START_MS) // DEFAULT_CHUNK_MS)
    _, base_wall, base_cpu = timed(
        lambda: numpy_baseline(per_chunk * chunks, len(clean.table)), args.repeat)
    baseline_rate = n / base_wall
    rows.append(("numpy baseline (normal + sin)", f"{n:,}", f"{base_wall:.2f}",
                 f"{base_cpu:.2f}", f"{baseline_rate / 1e6:.2f}", "1.00"))
    rows.append(("fleet, clean", f"{n:,}", f"{wall:.2f}", f"{cpu:.2f}",
                 f"{n / wall / 1e6:.2f}", f"{n / wall / baseline_rate:.2f}"))

    _, plan_wall, plan_cpu = timed(lambda: len(injected.labels(START_MS, end_ms)))
    n_inj, wall, cpu = timed(lambda: generate(injected), args.repeat)
    rows.append(("fleet, injected", f"{n_inj:,}", f"{wall:.2f}", f"{cpu:.2f}",
                 f"{n_inj / wall / 1e6:.2f}", f"{n_inj / wall / baseline_rate:.2f}"))
    labels = len(injected.labels(START_MS, end_ms))

    with tempfile.TemporaryDirectory(prefix="tidefield-bench-sim-") as tmp:
        def to_parquet() -> int:
            return write_scenario(injected, Path(tmp), START_MS, end_ms, fmt="parquet").readings

        n_pq, wall, cpu = timed(to_parquet)
        size = (Path(tmp) / "readings.parquet").stat().st_size
    rows.append(("fleet, injected -> parquet", f"{n_pq:,}", f"{wall:.2f}", f"{cpu:.2f}",
                 f"{n_pq / wall / 1e6:.2f}", f"{n_pq / wall / baseline_rate:.2f}"))

    print(f"firmware-sim backfill: {len(clean.table.sites)} sites, {len(clean.table):,} "
          f"series, {args.days:g} days from 2025-04-01, seed {args.seed}; {pinned}")
    print(f"warm-up (compile or load the Numba cache): {warm_wall:.1f} s; injection "
          f"planning for the 30-day epoch: {plan_wall:.1f} s wall, {plan_cpu:.1f} s CPU "
          f"({labels:,} labels in the window)")
    print()
    print(table(rows, ("mode", "readings", "wall s", "cpu s", "M readings/s",
                       "x baseline")))
    print()
    print(f"parquet: {size / n_pq:.2f} bytes per reading")


if __name__ == "__main__":
    main()
