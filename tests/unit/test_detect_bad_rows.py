"""One bad series or row does not stop the detector (issue 17): values that no sensor
sends (NaN, infinities, 1e308, a sentinel) on one series are scored without raising, and
every other series scores exactly as it would without them."""

from __future__ import annotations

import numpy as np

from tidefield.server.detect.detector import Detector, SeriesInfo
from tidefield.server.detect.engine import Engine
from tidefield.server.detect.rules import load_rules
from tidefield.server.detect.tuning import DetectorParams

T0 = 1_743_465_600_000
MIN = 60_000


def _engine() -> Engine:
    series = [SeriesInfo(i, "cg-1", f"cg-1-sonde{i}", "dissolved_oxygen", 60.0, "sonde",
                         "cage_farm") for i in range(3)]
    return Engine(Detector(series, DetectorParams(warm_n=50)), load_rules())


def _columns(n: int, bad: np.ndarray | None):
    rng = np.random.default_rng(5)
    good = 7.0 + rng.normal(0, 0.05, (n, 3))
    if bad is not None:
        good[:, 1] = bad
    rows = np.tile(np.arange(3), n)
    times = np.repeat(T0 + np.arange(n, dtype=np.int64) * MIN, 3)
    return rows, times, good.ravel()


def test_hostile_values_on_one_series_leave_the_others_alone():
    n = 400
    hostile = np.resize(np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, 7.0,
                                  -9999.0]), n)
    rows, times, values = _columns(n, hostile)
    clean_rows, clean_times, clean_values = _columns(n, None)
    scores, _ = _engine().process(rows, times, values)
    clean, _ = _engine().process(clean_rows, clean_times, clean_values)
    others = rows != 1
    np.testing.assert_array_equal(scores.score[others], clean.score[others])
    np.testing.assert_array_equal(scores.category[others], clean.category[others])
    assert np.isfinite(scores.score).all()
