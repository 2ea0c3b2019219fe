"""QARTOD quality flags per reading, the way ocean labs filter data.

Flags (the U.S. IOOS QARTOD scheme): 1 pass, 2 not evaluated, 3 suspect, 4 fail,
9 missing; each reading also names the test that set its flag (``TESTS``).

``flags_from_detector`` maps the detector's components, so the export, the SensorThings
``resultQuality`` and ``score-csv`` agree with the alerts:

* a missing reading (NaN, a no-data sentinel) is 9 (``missing_value``);
* a reading not yet scored (after the detector's watermark) is 2;
* a reading the detector calls broken sensor output is 4 where it is certain (``range``,
  or any fault scored at least ``FAIL_SCORE``: three times past its threshold) and 3
  where it is past the threshold only (0.5 to ``FAIL_SCORE``), with the test its
  component stands for (``COMPONENT_TEST``: stuck is QARTOD's flat line, a held step its
  rate of change, a gap its timing test; noise and drift keep Tidefield's own names);
* an event (a change the site's other sensors share) is the world, not the sensor: 1;
* everything else 1.

``extra_tests`` adds QARTOD tests the detector has no component for, from ``ioos_qc``
with thresholds learned from the series itself: rate of change (6 robust σ of the
series' own rate: suspect), attenuated signal (a day's standard deviation under a fifth
of its usual: suspect, a twentieth: fail) and, where at least a year of history exists,
a monthly climatology (outside the month's 0.5-99.5 % range widened by a tenth of it:
suspect). ``combine`` keeps the worst flag per reading (9 over 4 over 3 over 1 over 2).
"""

from __future__ import annotations

import numpy as np

from ._layout import CAT_EVENT, CAT_FAULT, CATEGORIES, COMPONENTS

PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING = 1, 2, 3, 4, 9
FAIL_SCORE = 0.75  # a ratio score of 3 thresholds (r / (1 + r) = 0.75 at r = 3)
TESTS = ("none", "missing_value", "gross_range_test", "timing_gap_test", "flat_line_test",
         "spike_test", "rate_of_change_test", "noise_burst", "drift", "attenuated_signal_test",
         "climatology_test")
T_NONE, T_MISSING, T_RANGE, T_GAP, T_FLAT, T_SPIKE, T_RATE, T_NOISE, T_DRIFT, T_ATTENUATED, \
    T_CLIMATOLOGY = range(len(TESTS))
COMPONENT_TEST = {"none": T_NONE, "range": T_RANGE, "gap": T_GAP, "stuck": T_FLAT,
                  "spike": T_SPIKE, "shift": T_RATE, "noise": T_NOISE, "drift": T_DRIFT,
                  "level": T_DRIFT}
_TEST_OF_COMPONENT = np.array([COMPONENT_TEST[c] for c in COMPONENTS], dtype=np.int8)
_K_RANGE = COMPONENTS.index("range")
# which flag outranks which when two tests disagree
_RANK = np.zeros(10, dtype=np.int8)
_RANK[[NOT_EVALUATED, PASS, SUSPECT, FAIL, MISSING]] = [0, 1, 2, 3, 4]


def flags_from_detector(values: np.ndarray, score: np.ndarray, component: np.ndarray,
                        category: np.ndarray, scored: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(flag, test index into ``TESTS``) per reading from the detector's output
    (``component``/``category`` as the kernel's codes); ``scored`` False marks readings
    the detector has not seen yet."""
    values = np.asarray(values, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    component = np.asarray(component, dtype=np.int64)
    category = np.asarray(category, dtype=np.int64)
    flag = np.full(values.shape, PASS, dtype=np.int8)
    test = np.full(values.shape, T_NONE, dtype=np.int8)
    fault = (category == CAT_FAULT) & (score >= 0.5)
    certain = fault & ((score >= FAIL_SCORE) | (component == _K_RANGE))
    flag[fault] = SUSPECT
    flag[certain] = FAIL
    test[fault] = _TEST_OF_COMPONENT[component[fault]]
    events = category == CAT_EVENT
    test[events] = T_NONE
    if scored is not None:
        later = ~np.asarray(scored, dtype=bool)
        flag[later] = NOT_EVALUATED
        test[later] = T_NONE
    missing = ~np.isfinite(values)
    flag[missing] = MISSING
    test[missing] = T_MISSING
    return flag, test


def flag_of(value: float | None, score: float | None, component: str | None,
            category: str | None, scored: bool) -> tuple[int, str]:
    """``flags_from_detector`` for one reading and its stored anomaly (None: none)."""
    flag, test = flags_from_detector(
        np.array([np.nan if value is None else value]), np.array([score or 0.0]),
        np.array([COMPONENTS.index(component) if component in COMPONENTS else 0]),
        np.array([CATEGORIES.index(category) if category in CATEGORIES else 0]),
        np.array([scored]))
    return int(flag[0]), TESTS[int(test[0])]


def combine(*pairs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The worst flag per reading over several (flag, test) results, and its test."""
    flag, test = (np.array(a, copy=True) for a in pairs[0])
    for other_flag, other_test in pairs[1:]:
        worse = _RANK[other_flag] > _RANK[flag]
        flag[worse] = other_flag[worse]
        test[worse] = other_test[worse]
    return flag, test


def _from_ioos(flags: np.ndarray, test_index: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.ma.filled(flags, NOT_EVALUATED).astype(np.int8)
    f[(f != SUSPECT) & (f != FAIL)] = NOT_EVALUATED  # only what the test found counts
    return f, np.where(f == NOT_EVALUATED, T_NONE, test_index).astype(np.int8)


def extra_tests(times_ms: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ioos_qc's rate of change, attenuated signal and (a year of history) climatology,
    thresholds learned from the series; (flag, test) with 2 where a test found nothing."""
    import pandas as pd
    from ioos_qc import qartod as q

    n = values.shape[0]
    results = [(np.full(n, NOT_EVALUATED, np.int8), np.full(n, T_NONE, np.int8))]
    finite = np.isfinite(values)
    if finite.sum() < 10:
        return results[0]
    times_s = times_ms.astype(np.float64) / 1000.0
    stamps = pd.to_datetime(times_ms, unit="ms")
    dt = np.diff(times_s)
    ok = (dt > 0) & finite[1:] & finite[:-1]
    if ok.sum() >= 10:
        rate = np.diff(values)[ok] / dt[ok]
        mad = float(np.median(np.abs(rate - np.median(rate)))) * 1.4826
        if mad > 0:
            results.append(_from_ioos(q.rate_of_change_test(values, stamps, 6.0 * mad),
                                      T_RATE))
    day_s = 86_400.0
    if times_s[-1] - times_s[0] >= 3 * day_s:
        daily = pd.Series(values, index=stamps).rolling(f"{int(day_s)}s", min_periods=10).std(
            ddof=0)
        usual = float(np.nanmedian(daily.to_numpy()))
        if usual > 0:
            results.append(_from_ioos(q.attenuated_signal_test(
                values, stamps, 0.2 * usual, 0.05 * usual, test_period=int(day_s),
                min_obs=10), T_ATTENUATED))
    if times_s[-1] - times_s[0] >= 365 * day_s:
        config = q.ClimatologyConfig()
        months = stamps.month.to_numpy()
        for month in range(1, 13):
            of_month = values[(months == month) & finite]
            if of_month.size < 10:
                continue
            lo, hi = np.percentile(of_month, [0.5, 99.5])
            pad = 0.1 * (hi - lo)
            config.add(tspan=(month, month), vspan=(lo - pad, hi + pad), period="month")
        results.append(_from_ioos(q.climatology_test(config, values, stamps, np.full(n, np.nan)),
                                  T_CLIMATOLOGY))
    return combine(*results)
