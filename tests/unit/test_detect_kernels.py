"""The detector's kernel against its plain twin (tidefield.server.detect.detector_twins), over
random, constant, NaN, inf and gap-containing input, and what each component must find."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest

from tidefield.protocol.units import DAY_MS
from tidefield.server.detect import detector_twins as reference
from tidefield.server.detect._layout import C_A_BURST_SLOW, C_DECAY, COMPONENTS
from tidefield.server.detect.detector import (
    Detector,
    DetectorInputError,
    SeriesInfo,
    score_values,
)
from tidefield.server.detect.tuning import DetectorParams

from ..support.realdata import realworld_or_skip

T0 = 1_743_465_600_000
MIN = 60_000
# short warm-ups so a few hours of data exercise every component, the cross-site median
# and the site corroboration
# (and a drift CUSUM that needs hours, not a day, of a sensor running away)
FAST = DetectorParams(warm_n=150, level_warm_days=0.05, slow_days=0.2, var_days=5.0,
                      profile_days=5.0, drift_h=6.0)


def _fleet(n_sites: int = 6) -> list[SeriesInfo]:
    series = []
    for site in range(n_sites):
        for metric in ("water_temperature", "dissolved_oxygen", "wind_direction"):
            series.append(SeriesInfo(len(series), f"s{site}", f"s{site}-sonde", metric, 60.0,
                                     "sonde", "cage_farm"))
    return series


def _batch(rng: np.random.Generator, series: list[SeriesInfo], hours: float, *,
           nan_rate=0.0, inf_rate=0.0, drop_rate=0.0, constant=False, spikes=0, walk=0.02):
    steps = int(hours * 60)
    rows, times, values = [], [], []
    for k, info in enumerate(series):
        base = {"water_temperature": 15.0, "dissolved_oxygen": 7.0,
                "wind_direction": 180.0}[info.metric]
        if constant:
            v = np.full(steps, base)
        else:
            v = base + np.cumsum(rng.normal(0, walk, steps)) + rng.normal(0, 0.05, steps)
            v = np.round(v, 2)
        if spikes:
            at = rng.choice(np.arange(30, steps), spikes, replace=False)
            v[at] += rng.choice([-1, 1], spikes) * 8.0
        if info.metric == "wind_direction":
            v = np.mod(v, 360.0)
        v[rng.random(steps) < nan_rate] = np.nan
        v[rng.random(steps) < inf_rate] = np.inf
        keep = rng.random(steps) >= drop_rate
        t = T0 + np.arange(steps, dtype=np.int64) * MIN + k * 1000
        rows.append(np.full(keep.sum(), k))
        times.append(t[keep])
        values.append(v[keep])
    rows, times, values = map(np.concatenate, (rows, times, values))
    order = np.lexsort((rows, times))
    return rows[order], times[order], values[order]


def _compare(series, rows, times, values, params=FAST):
    detector = Detector(series, params)
    got = detector.score(rows, times, values)
    want = reference.score_batch(rows, times, values, detector.cfg, detector.p)
    npt.assert_array_equal(got.component, want[1])
    npt.assert_array_equal(got.category, want[2])
    npt.assert_allclose(got.score, want[0], rtol=1e-6)
    return got


@pytest.mark.parametrize("case", [
    {}, {"constant": True}, {"nan_rate": 0.02}, {"inf_rate": 0.02}, {"drop_rate": 0.1},
    {"spikes": 5}, {"nan_rate": 0.01, "inf_rate": 0.01, "drop_rate": 0.05, "spikes": 3},
])
def test_kernel_equals_reference(case):
    rng = np.random.default_rng(7)
    series = _fleet()
    got = _compare(series, *_batch(rng, series, 8.0, **case))
    assert got.score.min() >= 0.0 and got.score.max() <= 1.0


def test_kernel_equals_reference_when_levels_move_at_one_site_and_at_all():
    rng = np.random.default_rng(3)
    series = _fleet(8)
    rows, times, values = _batch(rng, series, 12.0, walk=0.002)
    late = times > T0 + 6 * 3_600_000
    values = values.copy()
    hours_in = (times - (T0 + 6 * 3_600_000)) / 3_600_000.0
    ramp = 3.0 * np.clip(hours_in, 0.0, None)
    values[late & (rows == 0)] += ramp[late & (rows == 0)]  # one sensor drifts alone
    together = late & np.isin(rows, [3, 4])  # two sensors of one site move together
    values[together] -= ramp[together]
    got = _compare(series, rows, times, values)
    names = got.component_names()
    assert "drift" in set(names[rows == 0])
    assert set(got.category_names()[(rows == 0) & (names == "drift")]) == {"fault"}
    assert "event" in set(got.category_names()[np.isin(rows, [3, 4])])


def test_each_component_finds_its_fault():
    rng = np.random.default_rng(11)
    times = T0 + np.arange(600, dtype=np.int64) * MIN
    clean = np.round(15.0 + np.cumsum(rng.normal(0, 0.01, 600)) + rng.normal(0, 0.03, 600), 2)

    def found(values, at, times=times):
        scores = score_values(times, values, metric="water_temperature", params=FAST)
        return set(scores.component_names()[at]) - {"none"}

    spiked = clean.copy()
    spiked[300] += 9.0
    assert found(spiked, [300]) == {"spike"}
    stuck = clean.copy()
    stuck[300:400] = stuck[300]
    assert "stuck" in found(stuck, slice(300, 400))
    garbage = clean.copy()
    garbage[300] = 6553.5
    assert found(garbage, [300]) == {"range"}
    noisy = clean.copy()
    noisy[300:420] += rng.normal(0, 2.0, 120)
    assert "noise" in found(noisy, slice(300, 420))
    gappy_times = np.concatenate((times[:300], times[330:]))
    gappy = np.concatenate((clean[:300], clean[330:]))
    assert found(gappy, [300], gappy_times) == {"gap"}
    assert found(clean, slice(0, 600)) == set()


def test_readings_at_or_before_the_watermark_are_not_scored_again():
    series = _fleet(1)
    detector = Detector(series, FAST)
    rows = np.zeros(3, dtype=np.int64)
    first = detector.score(rows, T0 + np.arange(3) * MIN, np.array([1.0, 1.0, np.nan]))
    assert first.component_names()[2] == "range"
    again = detector.score(rows, T0 + np.arange(3) * MIN, np.array([1.0, 1.0, np.nan]))
    assert (again.component == 0).all()


def test_bad_input_is_refused_with_a_reason():
    # times that do not increase are a real logger's, scored (test_detect_score_csv.py)
    assert score_values(np.array([2, 1]), np.array([1.0, 2.0])).score.shape == (2,)
    with pytest.raises(DetectorInputError, match="unknown metric"):
        score_values(np.array([1, 2]), np.array([1.0, 2.0]), metric="nope")
    detector = Detector(_fleet(1))
    with pytest.raises(DetectorInputError, match="length"):
        detector.score(np.array([0, 0]), np.array([1]), np.array([1.0, 2.0]))
    with pytest.raises(DetectorInputError, match="out of range"):
        detector.score(np.array([9]), np.array([1]), np.array([1.0]))
    assert len(COMPONENTS) == 9


def test_checkpoint_continues_bit_for_bit():
    rng = np.random.default_rng(5)
    series = _fleet()
    rows, times, values = _batch(rng, series, 6.0, spikes=3, nan_rate=0.01)
    whole = Detector(series, FAST).score(rows, times, values)
    first = Detector(series, FAST)
    half = rows.shape[0] // 2
    a = first.score(rows[:half], times[:half], values[:half])
    second = Detector(series, FAST)
    second.load_state(first.state_arrays())
    b = second.score(rows[half:], times[half:], values[half:])
    npt.assert_array_equal(np.concatenate((a.score, b.score)), whole.score)
    npt.assert_array_equal(np.concatenate((a.component, b.component)), whole.component)


def test_kernel_equals_reference_and_a_soil_probe_finds_which_of_its_pair_drifts():
    rng = np.random.default_rng(5)
    series = [SeriesInfo(k, f"a{site}", f"a{site}-soil", metric, 300.0, "soil", "orchard")
              for k, (site, metric) in enumerate(
                  (site, metric) for site in range(5) for metric in ("soil_moisture", "soil_ec"))]
    steps = 24 * 12  # a day of 5-min readings
    t = T0 + np.arange(steps, dtype=np.int64) * 5 * MIN
    hours_in = np.clip((t - (T0 + 8 * 3_600_000)) / 3_600_000.0, 0.0, None)
    rows, times, values = [], [], []
    for site in range(5):
        # waterings lift the water content, the soil dries between; EC follows (^1.4)
        theta = 22.0 + 6.0 * np.abs(np.sin(np.arange(steps) / 40.0)) + rng.normal(0, 0.15, steps)
        ec = 1.2 * (theta / 25.0) ** 1.4 * (1.0 + rng.normal(0, 0.01, steps))
        if site == 0:
            ec = ec + 0.1 * hours_in  # the EC sensor drifts
        if site == 1:
            theta = theta + 1.0 * hours_in  # the moisture sensor drifts
        for k, v in ((2 * site, np.round(theta, 1)), (2 * site + 1, np.round(ec, 2))):
            rows.append(np.full(steps, k))
            times.append(t + k * 1000)
            values.append(v)
    rows, times, values = map(np.concatenate, (rows, times, values))
    order = np.lexsort((rows, times))
    rows, times, values = rows[order], times[order], values[order]
    got = _compare(series, rows, times, values)
    drifting = {int(r) for r in np.unique(rows[got.component_names() == "drift"])}
    assert drifting == {1, 2}  # site 0's EC and site 1's moisture, nothing else
    assert set(got.category_names()[got.component_names() == "drift"]) == {"fault"}


def _wave_buoys(values: np.ndarray):
    """Buoys reporting wave height every 5 minutes, ``values`` one row per buoy, as one
    batch in arrival order."""
    n, steps = values.shape
    series = [SeriesInfo(k, f"b{k}", f"b{k}-wave", "wave_height", 300.0, "wave", "ecological_buoy")
              for k in range(n)]
    t = T0 + np.arange(steps, dtype=np.int64) * 300_000
    rows = np.repeat(np.arange(n), steps)
    times = np.tile(t, n) + rows * 1000
    order = np.lexsort((rows, times))
    return series, rows[order], times[order], np.round(values.ravel()[order], 2)


def _hours(days: float) -> np.ndarray:
    return np.arange(int(days * 288)) / 12.0


def _exposed_buoys(days: float = 4.5, drift_from_day: float = 3.0):
    """Eight buoys whose wave height is one regional sea times each one's exposure (0.6 to
    2): a moderate sea swinging over 9 hours (no hour-of-day profile can learn it), then
    on the third day a swell three times higher for 18 hours; the first buoy's sensor
    drifts up by 40 % of the typical range from ``drift_from_day`` on."""
    exposure = np.array([1.0, 0.6, 0.8, 1.0, 1.0, 1.2, 1.5, 2.0])
    hours = _hours(days)
    swell = (hours >= 48) & (hours < 66)
    sea = np.where(swell, 0.9, 0.3) * np.sin(2 * np.pi * hours / 9.0)
    rng = np.random.default_rng(17)
    values = 2.0 + exposure[:, None] * sea[None, :] + rng.normal(0, 0.02, (len(exposure),
                                                                            hours.size))
    values[0] += 1.2 * np.clip((hours - 24 * drift_from_day) / (24 * (days - drift_from_day)),
                               0, None)
    return _wave_buoys(values)


BUOYS = DetectorParams(warm_n=50, level_warm_days=0.5, slow_days=1.0, var_days=1.0,
                       profile_days=2.0, drift_h=6.0)


def test_a_buoy_more_exposed_than_the_rest_is_no_drift_but_a_drifting_sensor_is():
    series, rows, times, values = _exposed_buoys()
    got = _compare(series, rows, times, values, BUOYS)  # kernel == twin, gain learned
    drift = got.component_names() == "drift"
    assert drift[rows == 0].any()
    assert not drift[rows != 0].any()
    # the same without the learned gain (a prior no swing can outweigh): in the swell the
    # most exposed buoy's residual against the regional median swings past the threshold
    no_gain = _compare(series, rows, times, values, BUOYS.model_copy(
        update={"gain_prior": 100.0}))
    assert (no_gain.component_names()[rows == 7] == "drift").any()


def _buoys(offsets: np.ndarray):
    """Buoys on one moderate sea, each with its own offset over time added (``offsets``:
    buoys x samples)."""
    n, steps = offsets.shape
    hours = np.arange(steps) / 12.0
    rng = np.random.default_rng(23)
    return _wave_buoys(2.0 + 0.3 * np.sin(2 * np.pi * hours / 9.0)[None, :] + offsets
                       + rng.normal(0, 0.02, (n, steps)))


def _ramp(hours, start_h, rise_h, size):
    return size * np.clip((hours - start_h) / rise_h, 0.0, 1.0)


def test_a_rise_that_several_buoys_share_is_no_drift_but_one_alone_is():
    hours = _hours(4.5)
    offsets = np.zeros((10, hours.size))
    offsets[:4] = _ramp(hours, 60.0, 12.0, 1.0)  # four buoys: the region's water changed
    offsets[9] = _ramp(hours, 80.0, 12.0, 1.0)  # one buoy alone, the same rise, later
    series, rows, times, values = _buoys(offsets)
    got = _compare(series, rows, times, values, BUOYS)
    drift = got.component_names() == "drift"
    assert drift[rows == 9].any()
    assert not drift[rows < 4].any()
    # counted as shared only from a fifth of the others and at least three: of five
    # buoys, a pair rising together is two sensors, not the region
    pair = np.zeros((5, hours.size))
    pair[:2] = _ramp(hours, 60.0, 12.0, 1.0)
    series, rows, times, values = _buoys(pair)
    got = _compare(series, rows, times, values, BUOYS)
    assert (got.component_names()[rows == 0] == "drift").any()


def test_a_level_suspected_for_longer_than_max_flag_days_becomes_the_level():
    hours = _hours(4.0)
    offsets = np.zeros((6, hours.size))
    offsets[0] = _ramp(hours, 30.0, 6.0, 1.0)  # a buoy moved to a rougher spot for good
    series, rows, times, values = _buoys(offsets)
    params = BUOYS.model_copy(update={"max_flag_days": 1.0})
    got = _compare(series, rows, times, values, params)
    names = got.component_names()
    late = times >= T0 + 3 * 86_400_000
    assert (names[(rows == 0) & ~late] == "drift").any()
    assert not (names[(rows == 0) & late] == "drift").any()


def _lone(values: np.ndarray, interval_ms: int = MIN, params: DetectorParams | None = None):
    """One series compared with no other (score-csv's case), kernel and twin both."""
    from tidefield.server.detect.detector import learned_limits

    times = T0 + np.arange(values.shape[0], dtype=np.int64) * interval_ms
    info = SeriesInfo(0, "s", "d", "value", interval_ms / 1000.0)
    params = params or DetectorParams()
    detector = Detector([info], params, limits={0: learned_limits(values)})
    rows = np.zeros(values.shape[0], dtype=np.int64)
    got = detector.score(rows, times, values)
    want = reference.score_batch(rows, times, values, detector.cfg, detector.p)
    npt.assert_array_equal(got.component, want[1])
    npt.assert_allclose(got.score, want[0], rtol=1e-6)
    return got


@pytest.mark.parametrize("case", ["walk", "shift", "noisy", "square", "nan", "quantized"])
def test_kernel_equals_reference_for_a_lone_series(case):
    rng = np.random.default_rng(19)
    n = 3000
    values = np.round(10 + np.cumsum(rng.normal(0, 0.01, n)) + rng.normal(0, 0.05, n), 2)
    if case == "shift":
        values[1800:] += 3.0
    elif case == "noisy":
        for start in range(400, n, 500):  # routine bursts: a turbidity probe's storms
            values[start:start + 60] += rng.normal(0, 1.0, 60)
    elif case == "square":
        values = np.where((np.arange(n) // 200) % 2 == 0, 0.0, 5.0)
    elif case == "nan":
        values[rng.random(n) < 0.02] = np.nan
    elif case == "quantized":
        values = np.round(values)
    got = _lone(values)
    assert got.score.min() >= 0.0 and got.score.max() <= 1.0


def test_an_often_flat_series_raises_no_stuck_but_a_lively_one_does():
    n = 4000
    square = np.where((np.arange(n) // 150) % 2 == 0, 1.0, 3.0)  # a valve, a pump state
    rain = np.zeros(n)
    rng = np.random.default_rng(2)
    for start in rng.choice(np.arange(0, n - 20), 12, replace=False):  # showers, then dry
        rain[start:start + 10] = np.round(rng.gamma(2.0, 0.4, 10), 1)
    rain[3000:3900] = 0.0  # a long dry spell
    for flat in (square, rain + 5.0):  # (off any bound: limits are learned)
        assert "stuck" not in set(_lone(flat, 5 * MIN).component_names())
    lively = np.round(12 + rng.normal(0, 0.2, n), 2)
    lively[2500:2800] = lively[2500]
    assert "stuck" in set(_lone(lively, 5 * MIN).component_names()[2500:2800])


def test_a_lone_series_is_judged_against_its_own_level():
    rng = np.random.default_rng(4)
    n = 2400
    values = np.round(20 + rng.normal(0, 0.1, n), 2)
    values[1500:] -= 1.5  # a step that holds: nothing else to compare it with
    names = _lone(values).component_names()
    assert "drift" in set(names[1500:1700])
    assert "drift" not in set(names[:1500])
    assert (_lone(values[:1500]).score < 0.5).all()


def test_the_noise_threshold_learns_how_noisy_the_series_is():
    rng = np.random.default_rng(6)
    n = 6000
    values = 5 + rng.normal(0, 0.05, n)
    for start in range(500, n, 400):  # every 400 readings a burst: this series' normal
        values[start:start + 40] += rng.normal(0, 0.6, 40)
    values = np.round(values, 3)
    fixed = _lone(values, params=DetectorParams(noise_eta=0.0))
    learned = _lone(values)
    late = slice(3000, n)

    def alarms(scores):
        return int((np.diff((scores.component_names()[late] == "noise").astype(int)) == 1)
                   .sum())

    assert alarms(fixed) >= 6
    assert alarms(learned) <= 2 * alarms(fixed) // 3


def test_a_series_far_noisier_than_the_fixed_threshold_is_calibrated_while_it_warms_up():
    # a flow meter that reads whole litres and flickers to the next count now and then:
    # the change of its step is mostly nothing and now and then a whole count, many
    # times its learned size, from the first reading on
    rng = np.random.default_rng(8)
    n = 1500
    values = 31.0 + (rng.random(n) < 0.1) + rng.normal(0, 0.002, n).round(4)
    values[1100:1160] += rng.integers(-2, 3, 60)  # a burst: counts all over the place
    got = _lone(values)
    assert (got.score[:1100] < 0.5).all()
    assert (got.score[1100:1170] >= 0.5).any()
    # stepping at the after-warm-up rate instead, it alarmed for noise once scoring began
    slow = _lone(values, params=DetectorParams(noise_eta_warm=0.01))
    assert "noise" in set(slow.component_names()[150:1100])


def test_the_slow_noise_test_averages_many_readings_even_where_they_are_hours_apart():
    # a river logged every 90 minutes: two hours were one reading, and the slow test's
    # lower threshold then judged a single change of the step (each flood's first rise)
    rng = np.random.default_rng(0)
    n = 1500
    values = 0.6 + np.cumsum(rng.normal(0, 0.001, n)) + rng.normal(0, 0.002, n)
    for start in (400, 800, 1200):  # floods: up in a reading, down over two days
        values[start:start + 40] += 0.8 * np.exp(-np.arange(40) / 8.0)
    got = _lone(np.round(values, 3), interval_ms=90 * MIN)
    assert "noise" not in set(got.component_names()[got.score >= 0.5])
    # and a minute's series keeps its two-hour mean
    info = SeriesInfo(0, "s", "d", "value", 60.0)
    detector = Detector([info], DetectorParams(), limits={0: (-np.inf, np.inf, 0.0, 1.0, 0.01)})
    assert detector.cfg[0, C_A_BURST_SLOW] == pytest.approx(1 - np.exp(-1 / 120))


def _onsets(scores) -> list[int]:
    """Where alarms (runs of readings scored at least 0.5) start."""
    alarm = scores.score >= 0.5
    return np.flatnonzero(alarm & ~np.concatenate(([False], alarm[:-1]))).tolist()


def test_one_alarm_an_episode_unless_the_next_is_much_larger_or_comes_after_refractory_hours():
    rng = np.random.default_rng(3)
    values = np.round(10 + rng.normal(0, 0.05, 3000), 2)  # every 15 minutes
    for at in (1000, 1010, 1020, 2000, 2200):  # a storm's pulses, then two days apart
        values[at] += 1.5
    values[1030] += 8.0  # in the episode, but far past its threshold
    assert _onsets(_lone(values, 15 * MIN)) == [1000, 1030, 2000, 2200]
    no_refractory = DetectorParams(refractory_hours=0.0)
    assert _onsets(_lone(values, 15 * MIN, no_refractory)) == [1000, 1010, 1020, 1030, 2000,
                                                               2200]


def test_a_lone_series_change_is_one_alarm_while_it_is_suspected():
    # a level that slides away slowly: the learned tail of its CUSUMs follows it up, and
    # the two crossed back and forth, one change read as a string of alarms
    rng = np.random.default_rng(5)
    n = 2400
    values = 20 + rng.normal(0, 0.1, n)
    values[1200:1700] -= np.linspace(0.0, 1.2, 500)
    values[1700:] -= 1.2
    got = _lone(np.round(values, 2))
    assert len(_onsets(got)) == 1
    assert set(got.component_names()[got.score >= 0.5]) == {"drift"}


def test_the_angle_wrap_is_the_plain_modulo_to_the_last_bit():
    from tidefield.server.detect._kernels import _wrap

    rng = np.random.default_rng(3)
    turns = np.array([-540.0, -360.0, -180.0, 0.0, 180.0, 360.0, 540.0, 720.0])
    differences = np.concatenate([
        rng.uniform(0, 360, 20_000) - rng.uniform(0, 360, 20_000),  # what the kernel meets
        rng.integers(0, 3600, 20_000) / 10.0 - rng.integers(0, 3600, 20_000) / 10.0,
        rng.uniform(-5000, 5000, 5_000),  # past one turn: the modulo itself
        turns, np.nextafter(turns, np.inf), np.nextafter(turns, -np.inf),
        [-0.0, 1e-300, -1e-300, np.nan, np.inf, -np.inf]])
    for d in differences:
        expected = (d + 180.0) % 360.0 - 180.0  # Python's float modulo, the twin's
        got = _wrap(d)
        assert (got == expected and np.signbit(got) == np.signbit(expected)) or (
            np.isnan(got) and np.isnan(expected)), d


def _river(n: int = 3000, seed: int = 5) -> np.ndarray:
    """A creek's level logged every 90 minutes: a calm base with floods rising metres
    over a few readings and falling over many (the typical range is set by them)."""
    rng = np.random.default_rng(seed)
    level = 0.5 + np.cumsum(rng.normal(0, 0.0005, n))
    for start in (300, 1100, 2300):  # floods: up 4 m in four readings, down over sixty
        rise = np.concatenate([np.linspace(0, 4.0, 5), np.linspace(4.0, 0, 60)])
        level[start:start + rise.size] += rise
    return np.round(level + rng.normal(0, 0.001, n), 3)


def test_a_reading_that_leaves_and_comes_back_is_a_spike_under_the_spike_floor():
    interval = 90 * MIN
    values = _river()
    calm = _lone(values, interval)
    assert "spike" not in set(calm.component_names()[1500:2200])
    # one reading off by 0.6 m: an eighth of the typical range, far under the spike
    # floor (a fifth of it), yet hundreds of the calm series' steps, and straight back
    spiked = values.copy()
    spiked[1800] -= 0.6
    got = _lone(spiked, interval)
    names = got.component_names()
    assert names[1801] == "spike" and got.score[1801] >= 0.5  # judged on its return
    assert not (got.score[1500:1800] >= 0.5).any()
    # a step out that holds is no leave and return, nor is a flood's rise
    held = values.copy()
    held[1800:] -= 0.6
    assert not (_lone(held, interval).component_names()[1790:1830] == "spike").any()
    # and a flood (up over a few readings, down over many) is judged as it was without
    # the leave-and-return test
    without = _lone(values, interval, DetectorParams(return_z=1e6))
    npt.assert_array_equal(calm.component_names(), without.component_names())


def test_a_series_that_leaves_and_comes_back_routinely_learns_it():
    """Gusts, passing clouds: single readings off and back are that series' normal; the
    test asks for more than the largest such pair of normal steps lately."""
    rng = np.random.default_rng(8)
    n = 3000
    values = 10 + rng.normal(0, 0.05, n)
    gusts = rng.choice(np.arange(5, n - 5), 150, replace=False)
    values[gusts] += rng.uniform(1.0, 3.0, gusts.size)
    got = _lone(np.round(values, 2), 10 * MIN)
    assert "spike" not in set(got.component_names())
    without = _lone(np.round(values, 2), 10 * MIN, DetectorParams(return_z=1e6))
    npt.assert_array_equal(got.score, without.score)
    # while a reading far past the largest gust is still a spike
    values[2500] += 12.0
    got = _lone(np.round(values, 2), 10 * MIN)
    assert "spike" in set(got.component_names()[2500:2502])
    assert (got.score[2500:2502] >= 0.5).any()


def test_the_largest_step_is_remembered_over_at_least_memory_min_readings():
    """memory_days (a week) is 112 readings of a river logged every 90 minutes: its
    floods come weeks apart, and the largest normal step had forgotten the last one's
    rise by the next. The memory spans at least memory_min_readings; the fleet's series
    (1 to 10 minutes) have more readings than that in a week and keep it to the bit."""
    params = DetectorParams()
    limits = (-np.inf, np.inf, 0.0, 1.0, 0.01)
    for interval_s, memory_ms in ((5400.0, 1000 * 5_400_000.0), (600.0, 7 * DAY_MS),
                                  (60.0, 7 * DAY_MS)):
        info = SeriesInfo(0, "s", "d", "value", interval_s)
        detector = Detector([info], params, limits={0: limits})
        want = float(np.exp(-interval_s * 1000.0 / memory_ms))
        assert detector.cfg[0, C_DECAY] == want


def test_a_river_logged_every_90_minutes_takes_a_flood_like_the_last_one_as_normal():
    """sandy_creek_conductivity (the river's tuning part): a flood dilutes the creek in
    one reading (358 to 169 uS/cm on 2018-02-25, the level up 0.5 m with it), two days
    after one that fell 142 in a reading. A week's memory (112 readings) kept 72 % of
    that fall, and the new one, past 1.5 times it, was a spike; remembered over a
    thousand readings it is normal, while both labelled anomalies are still found."""
    from tidefield.server.detect import benchmark as bm

    folder = realworld_or_skip() / "river_wq_leigh2019"
    series = bm.read_labelled(folder / "sandy_creek_conductivity.csv", 10.0)
    values = series.columns["value"]
    flood = int(np.flatnonzero(series.times_ms == np.datetime64("2018-02-25T09:40", "ms")
                               .astype(np.int64))[0])
    assert values[flood - 1] > 350.0 and values[flood] < 170.0
    week = score_values(series.times_ms, values,
                        params=DetectorParams(tz_offset_hours=10.0, memory_min_readings=1))
    assert week.score[flood] >= 0.5
    got = score_values(series.times_ms, values, params=DetectorParams(tz_offset_hours=10.0))
    assert got.score[flood] < 0.5
    for start in np.flatnonzero(series.labels):  # the labelled anomalies: found
        assert (got.score[start:start + 2] >= 0.5).any()


def test_a_lone_series_own_slow_movement_is_no_drift_but_its_labelled_faults_are_found():
    """WaterLab_2019_ph (LRO's tuning part, every 15 minutes): pH moving a few hundredths
    over days in June came to a quarter of its typical range, and the own-level check
    flagged it twice as a drift, with no label there. At own_span 0.4 neither is raised,
    and the labelled stretches alarmed on are the same."""
    from tidefield.server.detect import benchmark as bm

    folder = realworld_or_skip() / "lro_aquatic_qc"
    series = bm.read_labelled(folder / "WaterLab_2019_ph.csv", -7.0)
    values = series.columns["value"]
    label_zero_drift = {}
    found = {}
    for own_span in (0.25, DetectorParams().own_span):
        got = score_values(series.times_ms, values,
                           params=DetectorParams(tz_offset_hours=-7.0, own_span=own_span))
        alarm = got.score >= 0.5
        drift = alarm & (got.component_names() == "drift") & ~series.labels
        label_zero_drift[own_span] = int(drift.sum())
        found[own_span] = sum(bool(alarm[max(0, a - 10):b + 10].any())
                              for a, b in bm.runs(series.labels))
    assert label_zero_drift[0.25] > 0
    assert label_zero_drift[0.4] == 0
    assert found[0.4] == found[0.25] > 0


def _pressure_times(rng: np.random.Generator, n: int, case: str) -> np.ndarray:
    """Reading times (ms) as loggers send them: regular, jittered, with silences longer
    than the window, with repeated stamps and clocks stepped back."""
    steps = np.full(n, 10.0 * MIN)
    if case in ("jitter", "all"):
        steps = rng.uniform(0.2, 25.0, n) * MIN
    if case in ("silences", "all"):
        at = rng.choice(n, 6, replace=False)
        steps[at] = rng.uniform(0.5, 40.0, 6) * 3_600_000.0
    if case in ("repeats", "all"):
        steps[rng.random(n) < 0.05] = 0.0
    if case in ("back", "all"):
        at = rng.choice(n, 8, replace=False)
        steps[at] = -rng.uniform(1.0, 300.0, 8) * MIN
    return np.floor(T0 + 17 * MIN + np.cumsum(steps))


@pytest.mark.parametrize("window_hours", [12.0, 1.0, 7.3])
@pytest.mark.parametrize("case", ["regular", "jitter", "silences", "repeats", "back", "all"])
def test_the_windowed_high_equals_its_twin_to_the_bit(case, window_hours):
    from tidefield.server.detect._kernels import windowed_high
    from tidefield.server.detect.rules import RuleBinding

    rng = np.random.default_rng(11)
    n = 4000
    times = _pressure_times(rng, n, case)
    # a pressure walk with ties (rounded to 0.1 hPa) and a few large swings
    values = np.round(1013.0 + np.cumsum(rng.normal(0, 0.4, n))
                      + 15.0 * np.sin(np.arange(n) / 300.0), 1)
    window_ms = window_hours * 3_600_000.0
    state = RuleBinding.initial_state(3)  # the high of instance 1; the others untouched
    before = state.copy()
    twin = reference.WindowedHigh(window_ms)
    for t, x in zip(times.tolist(), values.tolist(), strict=True):
        got = windowed_high(state, 1, t, x, window_ms)
        want = twin.update(t, x)
        assert got == want and np.signbit(got) == np.signbit(want), (t, x)
    npt.assert_array_equal(state[[0, 2]], before[[0, 2]])


def test_the_windowed_high_is_the_largest_reading_of_the_window():
    # against the definition: readings in time order, the largest of those in the
    # current sub-window and the HIGH_SLOTS - 1 before it
    from tidefield.server.detect._layout import HIGH_SLOTS

    rng = np.random.default_rng(5)
    times = np.sort(_pressure_times(rng, 3000, "silences"))
    values = np.round(rng.normal(1010.0, 8.0, times.size), 1)
    window_ms = 12 * 3_600_000.0
    slot_ms = window_ms / HIGH_SLOTS
    twin = reference.WindowedHigh(window_ms)
    for i, (t, x) in enumerate(zip(times.tolist(), values.tolist(), strict=True)):
        start = (np.floor(t / slot_ms) - (HIGH_SLOTS - 1)) * slot_ms
        assert twin.update(t, x) == values[:i + 1][times[:i + 1] >= start].max()
