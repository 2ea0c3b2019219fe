"""What Tidefield is compared with on real data: a plain causal rolling z-score, the
QARTOD tests of ``ioos_qc`` with thresholds learned from the series' start, and river's
Half-Space Trees. Each takes one series (times in ms, values with NaN for a missing
reading) and returns a score per reading and its own default alarm threshold.

Choices, fixed before any real-data run (docs/detection.md):

* z-score: mean and standard deviation of the previous ``ZSCORE_WINDOW`` readings (not
  the current one), at least 10 of them; score |z|, alarm at 3.
* QARTOD (``ioos_qc.qartod``): gross range, spike, rate of change and flat line. From the
  first tenth of the series (at least 100 readings): its range widened by 10 % (suspect)
  and 100 % (fail) each side; the spike statistic's standard deviation times 4 (suspect)
  and 8 (fail); the rate of change's times 3 (QARTOD's usual n_dev); the longest flat
  run times 2 (suspect) and 4 (fail), at least 3 intervals, at the smallest step seen.
  Score 0.5 for suspect (3), 1.0 for fail (4); alarm at suspect.
* Half-Space Trees (``river.anomaly.HalfSpaceTrees``, its defaults: 10 trees, height 8,
  window 250) on the reading and its step, scaled by river's online MinMaxScaler; its
  score is not calibrated (a median near 0.85 on plain noise), so the alarm is river's
  own ``QuantileFilter`` at q = 0.99: the top 1 % of scores so far.

Each also runs with settings chosen on the tuning part of the real data (``TUNED``), as
Tidefield's were, so the comparison is with the best each can do there, not only with
its textbook default.

A missing reading (NaN) is not the baselines' to find: the benchmark counts it as an
alarm for every detector alike.
"""

from __future__ import annotations

import numpy as np

ZSCORE_WINDOW = 100
ZSCORE_THRESHOLD = 3.0
QARTOD_THRESHOLD = 0.5  # suspect
QARTOD_WIDEN = (0.1, 1.0)  # the start's range widened by this (suspect, fail) each side
QARTOD_RATE_SD = 3.0  # rate of change: this many standard deviations of the start's
HST_QUANTILE = 0.99
# the same detectors with settings chosen on the tuning part of the real data, as
# Tidefield's were: the best mean event-wise F1 over a small grid each (z 3-6; range
# widened 0.1/1, 0.5/2, 1/3 x rate 3, 6, 10 sd; q 0.99, 0.995, 0.999); docs/detection.md
TUNED_ZSCORE_THRESHOLD = 6.0
TUNED_QARTOD_WIDEN = (1.0, 3.0)
TUNED_QARTOD_RATE_SD = 10.0
TUNED_HST_QUANTILE = 0.999


def rolling_zscore(values: np.ndarray, window: int = ZSCORE_WINDOW) -> np.ndarray:
    """|z| of each reading against the previous ``window`` readings (causal)."""
    import pandas as pd

    past = pd.Series(values).shift(1).rolling(window, min_periods=10)
    mean, std = past.mean().to_numpy(), past.std().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(values - mean) / np.maximum(std, 1e-12)
    return np.nan_to_num(z, nan=0.0, posinf=1e12)


def _start(values: np.ndarray) -> np.ndarray:
    n = max(100, values.shape[0] // 10)
    start = values[:n]
    return start[np.isfinite(start)]


def _longest_flat_s(times_s: np.ndarray, values: np.ndarray, tolerance: float) -> float:
    longest = 0.0
    began = 0
    for i in range(1, values.shape[0]):
        if not abs(values[i] - values[i - 1]) <= tolerance:
            began = i
        else:
            longest = max(longest, times_s[i] - times_s[began])
    return longest


def qartod(times_ms: np.ndarray, values: np.ndarray, *,
           widen: tuple[float, float] = QARTOD_WIDEN,
           rate_sd: float = QARTOD_RATE_SD) -> np.ndarray:
    """The worst of ioos_qc's gross range, spike, rate of change and flat line flags per
    reading, as 0 (pass or not evaluated), 0.5 (suspect), 1 (fail)."""
    from ioos_qc import qartod as q

    start = _start(values)
    n = values.shape[0]
    if start.size < 3 or n < 3:
        return np.zeros(n)
    times_s = times_ms.astype(np.float64) / 1000.0
    lo, hi = float(start.min()), float(start.max())
    span = hi - lo if hi > lo else max(abs(hi) * 0.01, 1e-6)
    steps = np.abs(np.diff(np.unique(start)))
    resolution = float(steps[steps > 0].min()) if (steps > 0).any() else 1e-6
    suspect, fail = widen
    flags = [q.gross_range_test(values, (lo - fail * span, hi + fail * span),
                                (lo - suspect * span, hi + suspect * span))]
    spike = np.abs(start[1:-1] - (start[:-2] + start[2:]) / 2.0)
    sd = max(float(np.std(spike)), resolution)
    flags.append(q.spike_test(values, suspect_threshold=4 * sd, fail_threshold=8 * sd))
    t_start = times_s[: start.size]
    dt = np.diff(t_start)
    ok = dt > 0
    rate = np.abs(np.diff(start))[ok[: start.size - 1]] / dt[ok]
    if rate.size:
        flags.append(q.rate_of_change_test(values, times_s,
                                           max(rate_sd * float(np.std(rate)), 1e-12)))
    interval = float(np.median(dt[ok])) if ok.any() else 1.0
    flat = max(_longest_flat_s(t_start, start, resolution / 2.0), 3 * interval)
    flags.append(q.flat_line_test(values, times_s, 2 * flat, 4 * flat, resolution / 2.0))
    worst = np.zeros(n)
    for flag in flags:
        f = np.ma.filled(flag, 2).astype(np.int64)
        worst = np.maximum(worst, np.where(f == 4, 1.0, np.where(f == 3, 0.5, 0.0)))
    return worst


def half_space_trees(values: np.ndarray, seed: int = 7,
                     quantile: float = HST_QUANTILE) -> tuple[np.ndarray, np.ndarray]:
    """river's Half-Space Trees on (reading, step): its raw score per reading and
    whether its ``QuantileFilter`` (q = 0.99) alarms. Missing readings are skipped."""
    from river import anomaly, compose, preprocessing

    # river's documented pattern (QuantileFilter's docstring)
    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.QuantileFilter(
        anomaly.HalfSpaceTrees(seed=seed), q=quantile))
    gate = model["QuantileFilter"]
    scores = np.zeros(values.shape[0])
    alarms = np.zeros(values.shape[0], dtype=bool)
    prev = None
    for i, x in enumerate(values.tolist()):
        if x != x:  # NaN
            continue
        features = {"x": x, "step": 0.0 if prev is None else x - prev}
        prev = x
        score = model.score_one(features)
        scores[i] = score
        alarms[i] = gate.classify(score)
        model.learn_one(features)
    return scores, alarms
