"""Each simulator kernel against its plain NumPy twin (tidefield.sim.simulator_twins)."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest
from numba import njit

from tidefield.sim import astro, physics, render, rng
from tidefield.sim import simulator_twins as reference

T0 = 1_743_465_600_000  # 2025-04-01T00:00Z
DAY = 86_400_000
KEY = rng.stream_key(7, "test")


@njit
def _uniforms(key, n):
    out = np.empty(n)
    for i in range(n):
        out[i] = rng.uniform(rng.at(key, i))
    return out


@njit
def _value_noise(key, times, period):
    out = np.empty(times.shape[0])
    for i in range(times.shape[0]):
        out[i] = rng.value_noise(key, times[i], period)
    return out


@njit
def _sun(sin_lat, cos_lat, lon, times):
    out = np.empty((3, times.shape[0]))
    for i in range(times.shape[0]):
        out[0, i], out[1, i], out[2, i] = astro.sun(sin_lat, cos_lat, lon, times[i])
    return out


@njit
def _tide(times, amplitude, phase, lag):
    out = np.empty((2, times.shape[0]))
    for i in range(times.shape[0]):
        out[0, i], out[1, i] = astro.tide(times[i], amplitude, phase, lag)
    return out


@njit
def _settle(values, low, high, circular, steps):
    out = np.empty(values.shape[0])
    for i in range(values.shape[0]):
        out[i] = render.settle(values[i], low, high, circular, steps)
    return out


@njit
def _window(times, start, end, ramp):
    out = np.empty(times.shape[0])
    for i in range(times.shape[0]):
        out[i] = physics.window(times[i], start, end, ramp)
    return out


@njit
def _window_integral(times, start, end, ramp):
    out = np.empty(times.shape[0])
    for i in range(times.shape[0]):
        out[i] = physics.window_integral(times[i], start, end, ramp)
    return out


def test_splitmix_stream_matches_reference_bit_for_bit():
    n = np.arange(10_000)
    npt.assert_array_equal(_uniforms(KEY, n.size), reference.uniform(reference.at(KEY, n)))
    out = np.empty(10_000)
    rng.normals(KEY, 0, out.size, out)
    npt.assert_array_equal(out, reference.normal(reference.at(KEY, n)))


def test_hash_uniforms_and_normals_are_well_distributed():
    u = _uniforms(KEY, 200_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    out = np.empty(200_000)
    rng.normals(KEY, 123, out.size, out)
    assert abs(out.mean()) < 0.01 and abs(out.std() - 1.0) < 0.01
    assert abs(np.corrcoef(out[:-1], out[1:])[0, 1]) < 0.01  # consecutive counters independent


def test_stream_keys_are_stable_and_distinct():
    assert rng.stream_key(7, "oc-001", "salinity") == rng.stream_key(7, "oc-001", "salinity")
    keys = {rng.stream_key(seed, site) for seed in range(5) for site in ("a", "b", "c")}
    assert len(keys) == 15


def test_value_noise_matches_reference_and_is_continuous():
    times = T0 + np.arange(0, 3 * DAY, 61_001, dtype=np.int64)
    got = _value_noise(KEY, times, 3_600_000.0)
    npt.assert_allclose(got, reference.value_noise(KEY, times, 3_600_000.0), rtol=0, atol=1e-12)
    fine = _value_noise(KEY, T0 + np.arange(0, DAY, 1000, dtype=np.int64), 3_600_000.0)
    assert np.abs(np.diff(fine)).max() < 0.01  # no jumps at the knots


@pytest.mark.parametrize(("lat", "lon"), [(36.07, 120.38), (36.78, 119.95), (35.5, 121.0)])
def test_sun_matches_reference(lat, lon):
    times = T0 + np.arange(0, 365 * DAY, 3_600_000 * 7 + 13, dtype=np.int64)
    got = _sun(np.sin(np.radians(lat)), np.cos(np.radians(lat)), lon, times)
    want = reference.sun(lat, lon, times)
    for g, w in zip(got, want, strict=True):
        npt.assert_allclose(g, w, rtol=0, atol=1e-9)


def test_noon_sun_is_where_the_textbook_puts_it():
    # At Qingdao (36.07 N) the sun culminates at 90 - 36.07 + 23.44 = 77.4 deg at the June
    # solstice and 90 - 36.07 - 23.44 = 30.5 deg at the December one, near 12:00 solar time.
    lat, lon = 36.07, 120.38
    for day_ms, want_deg in ((1_750_464_000_000, 77.4), (1_766_275_200_000, 30.5)):
        times = day_ms + np.arange(0, DAY, 60_000, dtype=np.int64)
        sin_elev, solar_hours, _ = reference.sun(lat, lon, times)
        top = np.argmax(sin_elev)
        assert abs(np.degrees(np.arcsin(sin_elev[top])) - want_deg) < 0.5
        assert abs(solar_hours[top] - 12.0) < 0.05


def test_tide_matches_reference_and_its_rate_is_the_derivative():
    times = T0 + np.arange(0, 20 * DAY, 600_000, dtype=np.int64)
    amp, phase = astro.QINGDAO_AMPLITUDE_M, astro.QINGDAO_PHASE_DEG
    got = _tide(times, amp, phase, 7.5)
    want = reference.tide(times, amp, phase, 7.5)
    npt.assert_allclose(got[0], want[0], atol=1e-9)
    npt.assert_allclose(got[1], want[1], atol=1e-9)
    numeric = np.gradient(got[0], times / 3_600_000.0)
    npt.assert_allclose(numeric[1:-1], got[1][1:-1], atol=0.01)


def test_constituent_periods_are_the_standard_ones():
    want = {"M2": 12.4206, "S2": 12.0, "N2": 12.6583, "K1": 23.9345, "O1": 25.8193}
    for name, period in zip(astro.CONSTITUENTS, astro.PERIODS_HOURS, strict=True):
        assert period == pytest.approx(want[name], abs=1e-3)


def test_oxygen_saturation_matches_reference_and_published_values():
    celsius = np.linspace(-1.5, 35.0, 50)
    psu = np.linspace(0.0, 40.0, 50)
    got = physics.oxygen_saturation(celsius, psu)
    npt.assert_allclose(got, reference.oxygen_saturation(celsius, psu), rtol=1e-12)
    # APHA Standard Methods 4500-O table (fresh water, 1 atm): 14.621, 9.092, 7.559 mg/L
    fresh = physics.oxygen_saturation(np.array([0.0, 20.0, 30.0]), np.zeros(3))
    npt.assert_allclose(fresh, [14.621, 9.092, 7.559], atol=0.005)
    assert physics.oxygen_saturation(20.0, 35.0) < physics.oxygen_saturation(20.0, 0.0)


@pytest.mark.parametrize(("low", "high", "circular", "steps"), [
    (-40.0, 60.0, False, 10.0), (0.0, 200.0, False, 5.0), (0.0, 360.0, True, 1.0),
    (-2.5, 40.0, False, 100.0)])
def test_settle_matches_reference(low, high, circular, steps):
    values = np.concatenate([np.random.default_rng(1).normal(0, 300, 5000),
                             [low, high, 359.7, 359.4, -0.4, np.nextafter(360.0, 0)]])
    got = _settle(values, low, high, circular, steps)
    npt.assert_array_equal(got, reference.settle(values, low, high, circular, steps))
    if circular:
        assert got.min() >= 0.0 and got.max() < 360.0


def test_window_matches_reference_and_its_integral_is_exact():
    times = np.linspace(-5_000, 105_000, 2201)
    for start, end, ramp in ((0.0, 100_000.0, 20_000.0), (0.0, 100_000.0, 80_000.0),
                             (0.0, 100_000.0, 0.0)):
        got = _window(times, start, end, ramp)
        npt.assert_allclose(got, reference.window(times, start, end, ramp), atol=1e-12)
        numeric = np.concatenate([[0.0], np.cumsum((got[1:] + got[:-1]) / 2 * np.diff(times))])
        npt.assert_allclose(_window_integral(times, start, end, ramp), numeric, atol=60.0)


def test_gather_matches_a_sort():
    series = np.repeat(np.arange(3), 6)
    times = np.concatenate([[5, 15, 25, 35, 45, 55]] * 3).astype(np.int64)
    per_frame = np.array([1, 1, 1])
    values = np.random.default_rng(2).normal(size=18)
    values[4] = np.nan
    # series-major blocks of one sample per 10 ms frame, phase 5 ms for all
    pattern = (np.array([0, 1, 2]), np.array([0, 0, 0]), np.array([5, 5, 5]))
    out_lo = np.array([0, 6, 12])
    out = (np.empty(18, np.int32), np.empty(18, np.int64), np.empty(18))
    written = render.gather(*pattern, per_frame, out_lo, values, 0, 10, 6, 12, 50, *out)
    want = reference.gather(series, times, values, 12, 50)
    for got, expected in zip(out, want, strict=True):
        npt.assert_array_equal(got[:written], expected)


def test_drying_clock_is_the_integral_of_its_rate():
    p = np.zeros(physics.N_PARAMS)
    p[physics.DRYING_RATE] = 0.3
    times = T0 + np.arange(0, 10 * DAY, 60_000, dtype=np.int64)
    clock = np.array([physics.drying_clock(p, int(t)) for t in times[::60]])
    rate = np.diff(clock) / (1.0 / 24.0)  # e-foldings per day, hourly
    assert rate.min() > 0  # always drying
    hours = astro.local_hour(int(T0))  # the rate peaks early afternoon local time
    by_hour = rate[: 24 * 9].reshape(9, 24).mean(axis=0)
    peak_local = (hours + np.argmax(by_hour) + 0.5) % 24
    assert 11.0 <= peak_local <= 15.0
