"""Detector scoring throughput on one core, against its NumPy twin and pandas rolling.

    .venv/bin/python bench/detect.py [--hours 24] [--warm-hours 48] [--cpu 0]

The whole 250-site fleet (2,793 series, about 110,000 readings an hour) from firmware-sim
with its labelled faults and events, scored in arrival order:

1. kernel: ``Detector.score`` (the Numba ensemble: range, gap, stuck, spike, shift,
   noise, seasonal profile, hourly drift CUSUM against the cross-site median) over
   hourly batches, after ``--warm-hours`` of the same fleet so every component is live;
   the best of ``--repeat`` runs from the same warmed state.
   Then the same with the early warnings' forecasts (``Forecaster.advance`` after each
   batch's scores, as the engine runs them: every series a ``forecast`` rule names, the
   readings the engine calls broken, the confidence per reading), and the ratio of the
   two rates.
2. NumPy reference: ``reference.score_batch``, the plain twin the tests compare against,
   over the first ``--reference-readings`` readings (it is slow: one Python object per
   series, a step per reading).
3. pandas rolling: what one would write without a kernel, a per-series rolling
   median/MAD spike score (window 60) with ``groupby().rolling()``, over the same batch as
   the kernel.
4. vectorised NumPy: the same checks the kernel's cheap half makes (range, gap, stuck run,
   a spike against the median absolute step of the last 60 readings), written the way
   one would in whole-array NumPy (sort by series, ``sliding_window_view``, run lengths
   by cumulative sums), over the whole batch at once: the fair "no Numba" baseline.
4. cold start: a fresh process that imports the detector, builds it for the fleet and
   scores its first batch, twice; the second loads Numba's cache (target under 2 s).

Pinned to one CPU; rates are readings per second of wall time, with CPU time beside it
(a busy machine shows as wall time above CPU time).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import warnings

import numpy as np
from sim import pin_to_one_cpu  # bench/ is the script's folder, first on the path

from tidefield.protocol.units import HOUR_MS
from tidefield.server.detect import detector_twins as reference
from tidefield.server.detect.detector import Detector
from tidefield.server.detect.engine import broken_readings
from tidefield.server.detect.evaluate import fleet_series
from tidefield.server.detect.forecast.forecaster import Forecaster
from tidefield.server.detect.rules import load_rules
from tidefield.sim.fleet import Fleet
from tidefield.sim.scenario import scenario_plan

START_MS = 1_743_465_600_000  # 2025-04-01T00:00Z

COLD_START = """
import time
began = time.perf_counter()
import numpy as np
from tidefield.server.detect.detector import Detector, SeriesInfo
series = [SeriesInfo(i, f"s{i // 10}", f"d{i // 10}", "water_temperature", 60.0, "sonde")
          for i in range(2000)]
detector = Detector(series)
rows = np.arange(2000, dtype=np.int64)
detector.score(rows, np.full(2000, 1_743_465_600_000, dtype=np.int64), np.full(2000, 15.0))
print(time.perf_counter() - began, time.process_time())
"""


def hourly(fleet: Fleet, start_ms: int, hours: int) -> list[tuple]:
    batches = []
    for h in range(hours):
        chunk = fleet.generate(start_ms + h * HOUR_MS, start_ms + (h + 1) * HOUR_MS)
        batches.append((chunk.series.astype(np.int64), chunk.time_ms, chunk.value))
    return batches


def timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def pandas_rolling(series: np.ndarray, values: np.ndarray) -> np.ndarray:
    import pandas as pd

    frame = pd.DataFrame({"series": series, "value": values})
    grouped = frame.groupby("series")["value"]
    median = grouped.rolling(60, min_periods=10).median().reset_index(level=0, drop=True)
    deviation = (frame["value"] - median.sort_index()).abs()
    mad = (deviation.groupby(frame["series"]).rolling(60, min_periods=10).median()
           .reset_index(level=0, drop=True).sort_index())
    z = deviation / (1.4826 * mad + 1e-9)
    return (z / (1.0 + z)).to_numpy()


def numpy_vectorised(rows: np.ndarray, times: np.ndarray, values: np.ndarray,
                     cfg: np.ndarray) -> np.ndarray:
    """Range, gap, stuck and spike scores of a batch in whole-array NumPy (see the
    module docstring), in the batch's order."""
    from numpy.lib.stride_tricks import sliding_window_view

    from tidefield.server.detect._layout import C_HIGH, C_INTERVAL, C_LOW

    order = np.lexsort((times, rows))
    r, t, v = rows[order], times[order], values[order]
    n = r.shape[0]
    same = np.zeros(n, dtype=bool)
    same[1:] = r[1:] == r[:-1]
    low, high, interval = cfg[r, C_LOW], cfg[r, C_HIGH], cfg[r, C_INTERVAL]
    score = np.where((v >= low) & (v <= high), 0.0, 1.0)
    dt = np.zeros(n)
    dt[1:] = np.diff(t)
    gap = same & (dt > 2.5 * interval)
    score = np.maximum(score, np.where(gap, 0.5 + 0.0 * dt, 0.0))
    # stuck: the length of each run of one value within a series
    new_run = ~same.copy()
    new_run[1:] |= v[1:] != v[:-1]
    run_id = np.cumsum(new_run)
    run_start = np.flatnonzero(new_run)
    run_len = np.arange(n) - run_start[run_id - 1]
    score = np.maximum(score, np.where(run_len >= 12, run_len / (run_len + 12.0), 0.0))
    # spike: the step against the median absolute step of the 60 before it
    step = np.zeros(n)
    step[1:] = np.abs(np.diff(v))
    step[~same] = np.nan
    window = 60
    padded = np.concatenate((np.full(window, np.nan), step))
    views = sliding_window_view(padded[:-1], window)
    medians = np.empty(n)
    position = np.arange(n) - np.flatnonzero(~same)[np.cumsum(~same) - 1]  # in its series
    lag = np.arange(window)[None, :]
    for lo in range(0, n, 100_000):  # blocks: a (n, 60) array of the whole batch is GBs
        block = views[lo:lo + 100_000].copy()
        block[lag < window - position[lo:lo + 100_000, None]] = np.nan  # another series'
        with warnings.catch_warnings():  # a series' first reading has no step before it
            warnings.simplefilter("ignore", RuntimeWarning)
            medians[lo:lo + 100_000] = np.nanmedian(block, axis=1)
    z = step / (12.0 * np.maximum(medians, 1e-9))
    score = np.maximum(score, np.nan_to_num(z / (1.0 + z)))
    out = np.empty(n)
    out[order] = score
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--warm-hours", type=int, default=48)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-readings", type=int, default=200_000)
    args = parser.parse_args()
    print(pin_to_one_cpu(args.cpu))
    end = START_MS + (args.warm_hours + args.hours) * HOUR_MS
    fleet = Fleet(seed=args.seed, plan=scenario_plan(START_MS, end))
    series = fleet_series(fleet)
    warm = hourly(fleet, START_MS, args.warm_hours)
    batches = hourly(fleet, START_MS + args.warm_hours * HOUR_MS, args.hours)
    n = sum(b[0].shape[0] for b in batches)
    print(f"{len(series):,} series; {n:,} readings scored in {args.hours} hourly batches "
          f"after {args.warm_hours} h of warm-up")

    detector = Detector(series)
    detector.score(*warm[0])  # compile or load the cache before timing
    for batch in warm[1:]:
        detector.score(*batch)
    warmed = detector.state_arrays()
    best = None
    for _ in range(args.repeat):
        detector.load_state(warmed)
        took = timed(lambda: [detector.score(*b) for b in batches])
        best = took if best is None or took[0] < best[0] else best
    kernel_rate = n / best[0]
    print(f"kernel            {kernel_rate / 1e6:8.2f} M readings/s  (wall {best[0]:.2f} s, "
          f"CPU {best[1]:.2f} s: {n / max(best[1], 1e-9) / 1e6:.1f} M per CPU second)")

    forecaster = Forecaster(series, load_rules())
    for batch in warm:
        forecaster.advance(*batch, np.zeros(batch[0].shape[0], dtype=bool))
    warmed_forecasts = forecaster.state.copy()

    def score_and_forecast() -> None:
        for b in batches:
            scores = detector.score(*b)
            # the engine reads the confidence: a column the length of the batch
            _ = forecaster.advance(*b, broken_readings(detector, b[0], scores)).confidence

    both = None
    for _ in range(args.repeat):
        detector.load_state(warmed)
        forecaster.state = warmed_forecasts.copy()
        took = timed(score_and_forecast)
        both = took if both is None or took[0] < both[0] else both
    print(f"kernel + forecasts {n / both[0] / 1e6:7.2f} M readings/s  (wall {both[0]:.2f} s, "
          f"CPU {both[1]:.2f} s: {n / max(both[1], 1e-9) / 1e6:.1f} M per CPU second; "
          f"{len(forecaster.active_rows)} series forecast; ratio to the kernel alone "
          f"{best[0] / both[0]:.2f})")

    rows = np.concatenate([b[0] for b in batches])[:args.reference_readings]
    times = np.concatenate([b[1] for b in batches])[:args.reference_readings]
    values = np.concatenate([b[2] for b in batches])[:args.reference_readings]
    ref_wall, _ = timed(lambda: reference.score_batch(rows, times, values,
                                                            detector.cfg, detector.p))
    ref_rate = rows.shape[0] / ref_wall
    print(f"NumPy reference   {ref_rate / 1e6:8.3f} M readings/s  (wall {ref_wall:.2f} s over "
          f"{rows.shape[0]:,}; kernel is {kernel_rate / ref_rate:,.0f}x)")

    all_rows = np.concatenate([b[0] for b in batches])
    all_values = np.concatenate([b[2] for b in batches])
    pd_wall, _ = timed(lambda: pandas_rolling(all_rows, all_values))
    pd_rate = n / pd_wall
    print(f"pandas rolling    {pd_rate / 1e6:8.3f} M readings/s  (wall {pd_wall:.2f} s; "
          f"kernel is {kernel_rate / pd_rate:,.1f}x)")

    numpy_wall, numpy_cpu = timed(lambda: numpy_vectorised(all_rows, np.concatenate(
        [b[1] for b in batches]), all_values, detector.cfg))
    numpy_rate = n / numpy_wall
    print(f"vectorised NumPy  {numpy_rate / 1e6:8.3f} M readings/s  (wall {numpy_wall:.2f} s, "
          f"CPU {numpy_cpu:.2f} s; kernel is {kernel_rate / numpy_rate:,.1f}x)")

    for attempt in ("first", "second"):
        out = subprocess.run([sys.executable, "-c", COLD_START], capture_output=True,
                             text=True, check=True)
        wall, cpu = (float(x) for x in out.stdout.split())
        print(f"{attempt} start to first scored batch: {wall:.2f} s (CPU {cpu:.2f} s)")


if __name__ == "__main__":
    main()
