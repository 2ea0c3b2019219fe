"""QARTOD flags from the detector's output, and the extra ioos_qc tests."""

from __future__ import annotations

import numpy as np

from tidefield.server.detect._layout import CATEGORIES, COMPONENTS
from tidefield.server.detect.qartod import (
    FAIL,
    MISSING,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    TESTS,
    combine,
    extra_tests,
    flag_of,
    flags_from_detector,
)


def _map(rows):
    """rows: (value, score, component, category, scored) -> [(flag, test name)]"""
    value, score, component, category, scored = zip(*rows, strict=True)
    flag, test = flags_from_detector(
        np.array(value), np.array(score), np.array([COMPONENTS.index(c) for c in component]),
        np.array([CATEGORIES.index(c) for c in category]), np.array(scored))
    return [(int(f), TESTS[t]) for f, t in zip(flag, test, strict=True)]


def test_each_component_maps_to_its_flag_and_test():
    nan = float("nan")
    assert _map([
        (1.0, 0.0, "none", "none", True),  # nothing found
        (nan, 1.0, "range", "fault", True),  # a missing reading
        (99.0, 1.0, "range", "fault", True),  # outside the physical range
        (1.0, 0.6, "spike", "fault", True),  # past its threshold
        (1.0, 0.8, "spike", "fault", True),  # three thresholds past it
        (1.0, 0.6, "stuck", "fault", True),
        (1.0, 0.9, "shift", "fault", True),
        (1.0, 0.6, "gap", "fault", True),
        (1.0, 0.6, "noise", "fault", True),
        (1.0, 0.6, "drift", "fault", True),
        (1.0, 0.9, "level", "event", True),  # the world changed: the data is good
        (1.0, 0.9, "shift", "event", True),
        (1.0, 0.3, "spike", "fault", True),  # under the threshold
        (1.0, 0.0, "none", "none", False),  # after the detector's watermark
        (nan, 0.0, "none", "none", False),  # missing is missing, scored or not
    ]) == [(PASS, "none"), (MISSING, "missing_value"), (FAIL, "gross_range_test"),
           (SUSPECT, "spike_test"), (FAIL, "spike_test"), (SUSPECT, "flat_line_test"),
           (FAIL, "rate_of_change_test"), (SUSPECT, "timing_gap_test"),
           (SUSPECT, "noise_burst"), (SUSPECT, "drift"), (PASS, "none"), (PASS, "none"),
           (PASS, "none"), (NOT_EVALUATED, "none"), (MISSING, "missing_value")]
    assert flag_of(None, None, None, None, True) == (MISSING, "missing_value")
    assert flag_of(2.0, 0.7, "stuck", "fault", True) == (SUSPECT, "flat_line_test")


def test_combine_keeps_the_worst_flag_and_its_test():
    a = (np.array([1, 1, 3, 2, 9], np.int8), np.array([0, 0, 5, 0, 1], np.int8))
    b = (np.array([2, 3, 4, 2, 4], np.int8), np.array([0, 6, 9, 0, 2], np.int8))
    flag, test = combine(a, b)
    assert flag.tolist() == [1, 3, 4, 2, 9]
    assert test.tolist() == [0, 6, 9, 0, 1]


def test_extra_tests_find_an_attenuated_signal_and_a_rate_of_change():
    rng = np.random.default_rng(1)
    n = 96 * 10  # ten days of 15-minute readings
    times = np.arange(n, dtype=np.int64) * 900_000
    values = 10 + np.sin(2 * np.pi * np.arange(n) / 96) + rng.normal(0, 0.1, n)
    values[96 * 6:96 * 8] = values[96 * 6]  # two days with no signal at all
    values[200] += 30.0  # a jump no rate of this series reaches
    flag, test = extra_tests(times, values)
    names = np.asarray(TESTS)[test]
    assert (flag[96 * 7:96 * 8] == FAIL).all()
    assert set(names[96 * 7:96 * 8]) == {"attenuated_signal_test"}
    assert flag[200] >= SUSPECT and names[200] == "rate_of_change_test"
    assert (flag[300:500] == NOT_EVALUATED).mean() > 0.95  # ordinary days: nothing found


def test_climatology_needs_a_year_and_flags_a_reading_out_of_its_season():
    rng = np.random.default_rng(2)
    days = 400
    times = np.arange(days * 24, dtype=np.int64) * 3_600_000
    doy = np.arange(days * 24) / 24.0
    values = 15 - 10 * np.cos(2 * np.pi * doy / 365.25) + rng.normal(0, 0.5, doy.size)
    winter = 10 * 24  # January, about 5 °C
    values[winter] = 24.0  # a summer temperature in January: rate and climatology
    flag, test = extra_tests(times, values)
    assert "climatology_test" in set(np.asarray(TESTS)[test])
    assert flag[winter] >= SUSPECT
    short = extra_tests(times[: 100 * 24], values[: 100 * 24])
    assert "climatology_test" not in set(np.asarray(TESTS)[short[1]])
