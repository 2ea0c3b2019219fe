"""Early warning: the forecaster's kernel against its plain twin, what each model learns,
and warnings through the alert lifecycle (opened ahead of the crossing, escalated by the
alert they foretold, closed when the forecast recovers)."""

from __future__ import annotations

import numpy as np
import numpy.testing as npt
import pytest

from tidefield.server.detect.alerts import MemorySink
from tidefield.server.detect.detector import Detector, SeriesInfo
from tidefield.server.detect.engine import Engine
from tidefield.server.detect.forecast import _kernels
from tidefield.server.detect.forecast import forecast_twins as twin
from tidefield.server.detect.forecast._layout import FC_ACTIVE
from tidefield.server.detect.forecast.forecaster import Forecaster, ForecastParams
from tidefield.server.detect.rules import RulesError, load_rules
from tidefield.server.detect.tuning import DetectorParams

T0 = 1_743_465_600_000
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000

SERIES = [
    SeriesInfo(0, "cg-1", "cg-1-sonde", "dissolved_oxygen", 60.0, "sonde", "cage_farm"),
    SeriesInfo(1, "ag-1", "ag-1-met", "air_temperature", 120.0, "met", "orchard"),
    SeriesInfo(2, "pt-1", "pt-1-met", "air_pressure", 300.0, "met", "port_terminal"),
    SeriesInfo(3, "cg-1", "cg-1-sonde", "water_temperature", 60.0, "sonde", "cage_farm"),
]
BASE = {0: (7.5, 1.0), 1: (8.0, 5.0), 2: (1010.0, 1.0), 3: (15.0, 0.5)}  # level, daily swing


def _batch(rng, days, *, nan_rate=0.0, inf_rate=0.0, drop_rate=0.0, walk=0.01):
    rows, times, values = [], [], []
    for info in SERIES:
        step = int(info.interval_s * 1000)
        t = T0 + np.arange(int(days * DAY / step), dtype=np.int64) * step + info.key * 1000
        level, swing = BASE[info.key]
        v = (level + swing * np.sin(2 * np.pi * (t % DAY) / DAY)
             + np.cumsum(rng.normal(0, walk, t.size)) + rng.normal(0, 0.05, t.size))
        v = np.round(v, 2)
        v[rng.random(t.size) < nan_rate] = np.nan
        v[rng.random(t.size) < inf_rate] = np.inf
        keep = rng.random(t.size) >= drop_rate
        rows.append(np.full(keep.sum(), info.key))
        times.append(t[keep])
        values.append(v[keep])
    rows, times, values = map(np.concatenate, (rows, times, values))
    order = np.lexsort((rows, times))
    return rows[order], times[order], values[order]


@pytest.mark.parametrize("model", ["harmonic", "damped_trend"])
@pytest.mark.parametrize("case", [
    {}, {"nan_rate": 0.02}, {"inf_rate": 0.02}, {"drop_rate": 0.2}, {"walk": 0.2},
])
def test_kernel_equals_its_twin(model, case):
    rng = np.random.default_rng(5)
    rows, times, values = _batch(rng, 2.5, **case)
    broken = rng.random(rows.size) < 0.01
    forecaster = Forecaster(SERIES, load_rules(), ForecastParams(model=model, warm_days=0.5))
    got = forecaster.advance(rows, times, values, broken)
    want, _ = twin.advance(rows, times, values, broken, forecaster.cfg)
    for column, name in enumerate(("confidence", "crossing_ms", "low", "high")):
        npt.assert_allclose(getattr(got, name), want[:, column], rtol=1e-9, atol=1e-9,
                            err_msg=name)
    made = np.isfinite(got.confidence)
    assert made.any()
    assert not made[rows == 3].any()  # water temperature: no forecast rule names it
    assert not made[broken].any()
    assert ((got.confidence[made] >= 0.0) & (got.confidence[made] <= 1.0)).all()


def test_a_batch_split_anywhere_gives_the_same_forecasts():
    rng = np.random.default_rng(8)
    rows, times, values = _batch(rng, 2.0)
    broken = np.zeros(rows.size, dtype=bool)
    whole = Forecaster(SERIES, load_rules(), ForecastParams(warm_days=0.5))
    parts = Forecaster(SERIES, load_rules(), ForecastParams(warm_days=0.5))
    want = whole.advance(rows, times, values, broken).confidence
    cut = rows.size // 3
    got = np.concatenate([parts.advance(rows[:cut], times[:cut], values[:cut],
                                        broken[:cut]).confidence,
                          parts.advance(rows[cut:], times[cut:], values[cut:],
                                        broken[cut:]).confidence])
    npt.assert_array_equal(got, want)


def test_only_the_forecast_series_readings_are_walked_and_the_rest_are_nan():
    """The kernel walks the readings ``pick`` finds (the twin's), and a batch of only
    those gives them the same forecasts, to the bit, as the whole batch does; every other
    reading is NaN in every column, and a row out of range is refused."""
    rng = np.random.default_rng(9)
    rows, times, values = _batch(rng, 2.0, nan_rate=0.01)
    broken = rng.random(rows.size) < 0.01
    whole = Forecaster(SERIES, load_rules(), ForecastParams(warm_days=0.5))
    alone = Forecaster(SERIES, load_rules(), ForecastParams(warm_days=0.5))
    picked = _kernels.pick(rows, whole.cfg[:, FC_ACTIVE] > 0.0)
    npt.assert_array_equal(picked, twin.pick(rows, whole.cfg))
    assert 0 < picked.size < rows.size
    got = whole.advance(rows, times, values, broken)
    want = alone.advance(rows[picked], times[picked], values[picked], broken[picked])
    others = np.ones(rows.size, dtype=bool)
    others[picked] = False
    for name in ("confidence", "crossing_ms", "low", "high"):
        column = getattr(got, name)
        assert column.shape == rows.shape
        npt.assert_array_equal(column[picked], getattr(want, name), err_msg=name)
        assert np.isnan(column[others]).all(), name
    assert np.isfinite(got.confidence[picked]).any()
    for column in range(4):
        npt.assert_array_equal(_kernels.spread(rows.size, got.picked, got.made, column),
                               twin.spread(rows.size, got.picked, got.made, column))
    npt.assert_array_equal(whole.state, alone.state)
    for bad in (-1, len(SERIES)):
        with pytest.raises(ValueError, match="out of range"):
            whole.advance(np.array([0, bad]), times[:2], values[:2], broken[:2])


def _one_series(model, values, step_ms=MIN):
    times = T0 + np.arange(values.size, dtype=np.int64) * step_ms
    forecaster = Forecaster(SERIES[:1], load_rules(), ForecastParams(model=model))
    out = forecaster.advance(np.zeros(values.size, dtype=np.int64), times, values,
                             np.zeros(values.size, dtype=bool))
    return times, out, forecaster


def test_the_harmonic_model_learns_the_daily_cycle_and_does_not_cry_wolf_at_dusk():
    """Oxygen swinging 6.5 to 9.5 mg/L every day: the harmonic model learns the cycle and
    expects the evening's fall, staying quiet."""
    t = T0 + np.arange(6 * 1440, dtype=np.int64) * MIN
    values = np.round(8.0 + 1.5 * np.sin(2 * np.pi * (t % DAY) / DAY), 2)
    _, harmonic, learned = _one_series("harmonic", values)
    late = slice(4 * 1440, None)
    assert np.nanmax(harmonic.confidence[late]) < 0.01
    from tidefield.server.detect.forecast._layout import FS_A1, FS_B1, FS_C0
    c0, a1, b1 = learned.state[0, [FS_C0, FS_A1, FS_B1]]
    # six days of a three-day time constant: most of the swing (1 - e^-2 = 86 %)
    assert c0 == pytest.approx(8.0, abs=0.1) and 1.2 <= np.hypot(a1, b1) <= 1.55


@pytest.mark.parametrize("model", ["harmonic", "damped_trend"])
def test_an_evening_decline_is_warned_with_its_expected_crossing(model):
    """Two quiet days at 8 mg/L, then oxygen falls 1.2 mg/L an hour: 3 mg/L is crossed
    about 4 h 10 min into the fall; the forecast says so hours before, and the band at
    the crossing is centred within a forecast step's fall (15 min, 0.3 mg/L) of it."""
    quiet = np.full(2 * 1440, 8.0) + np.tile([0.0, 0.02], 1440)
    fall = np.round(8.0 - 1.2 * np.arange(1, 361) / 60.0, 2)
    times, out, _ = _one_series(model, np.concatenate([quiet, fall]))
    start = T0 + 2 * 1440 * MIN
    crossing = start + int(5.0 / 1.2 * HOUR)
    assert np.nanmax(out.confidence[:2 * 1440]) < 0.05
    warned = np.flatnonzero(out.confidence >= 0.5)
    assert warned.size and crossing - times[warned[0]] >= 2 * HOUR
    at = np.flatnonzero(times >= crossing - HOUR)[0]  # an hour before it
    assert abs(out.crossing_ms[at] - crossing) <= 45 * MIN
    assert out.low[at] < out.high[at]
    assert abs((out.low[at] + out.high[at]) / 2 - 3.0) <= 0.35


def _farm(min_minutes=10):
    series = [SeriesInfo(0, "cg-1", "cg-1-sonde", "dissolved_oxygen", 60.0, "sonde",
                         "cage_farm")]
    return Engine(Detector(series, DetectorParams(warm_n=150)), load_rules(),
                  ForecastParams(warm_days=0.5))


def _stream(engine, values):
    sink = MemorySink()
    times = T0 + np.arange(values.size, dtype=np.int64) * MIN
    for lo in range(0, values.size, 60):  # hourly slices, as the service cuts them
        hi = min(values.size, lo + 60)
        sink.apply(engine.step(np.zeros(hi - lo, dtype=np.int64), times[lo:hi],
                               values[lo:hi], int(times[hi - 1]) + MIN).ops)
    return sink


def test_a_warning_opens_before_hypoxia_and_the_hypoxia_alert_escalates_it():
    quiet = np.full(1440, 8.0) + np.tile([0.0, 0.02], 720)
    fall = np.round(8.0 - 1.2 * np.arange(1, 361) / 60.0, 2)
    sink = _stream(_farm(), np.concatenate([quiet, fall, np.full(120, 1.5)]))
    # (one synthetic sensor alone also gets sensor alerts: not the point here)
    oxygen = [a for a in sink.alerts if a.key.rule.startswith("hypoxia")]
    assert [a.key.rule for a in oxygen] == ["hypoxia_forecast", "hypoxia"]
    warning, alert = oxygen
    assert warning.category == "forecast" and alert.category == "event"
    assert alert.opened_ms - warning.opened_ms >= 2 * HOUR
    assert warning.closed_ms == alert.opened_ms and warning.escalated_to == "hypoxia"
    assert "under 3 mg/L at 2025-04-02" in warning.message, warning.message
    assert [op.action for op in sink.ops if op.alert is warning][-1] == "closed"


def test_a_warning_whose_forecast_recovers_closes_itself():
    quiet = np.full(1440, 8.0) + np.tile([0.0, 0.02], 720)
    fall = np.round(8.0 - 1.2 * np.arange(1, 151) / 60.0, 2)  # down to 5 mg/L, then back
    back = np.round(np.linspace(5.0, 8.0, 180), 2)
    sink = _stream(_farm(), np.concatenate([quiet, fall, back, np.full(600, 8.0)]))
    oxygen = [a for a in sink.alerts if a.key.rule.startswith("hypoxia")]
    assert [a.key.rule for a in oxygen] == ["hypoxia_forecast"]
    warning = oxygen[0]
    assert warning.closed_ms is not None and warning.escalated_to is None


def test_forecast_rules_are_checked(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  x:\n    metric: air_temperature\n    condition: forecast\n"
                   "    of: hypoxia\n    threshold: 0.5\n    clear: 0.2\n"
                   "    category: forecast\n    scope: site\n    message: m\n")
    with pytest.raises(RulesError, match="`of` must name"):
        load_rules(bad)
    bad.write_text("rules:\n  x:\n    metric: dissolved_oxygen\n    condition: forecast\n"
                   "    of: hypoxia\n    threshold: 1.5\n    clear: 0.2\n"
                   "    category: forecast\n    scope: site\n    message: m\n")
    with pytest.raises(RulesError, match="confidences"):
        load_rules(bad)


def test_an_aerator_run_lifts_hypoxic_water_toward_saturation_and_lets_it_fall_back():
    from tidefield.sim.actuators import Effect, aerated
    from tidefield.sim.physics import oxygen_saturation

    times = T0 + np.arange(600, dtype=np.int64) * MIN
    low = np.full(600, 2.0)
    water, salt = np.full(600, 20.0), np.full(600, 31.0)
    out = aerated(times, low, water, salt, [(T0 + 60 * MIN, T0 + 300 * MIN)],
                  Effect("aerator", "cg-1-sonde"))
    saturation = float(oxygen_saturation(20.0, 31.0))
    assert (out[:60] == 2.0).all()  # nothing before the run
    assert out[60 + 15] == pytest.approx(2.0 + (saturation - 2.0) * (1 - np.exp(-1)), rel=0.02)
    assert out[299] == pytest.approx(saturation, rel=0.01)
    assert 2.0 < out[420] < out[299]  # after: the surplus decays with respiration


def test_aerators_in_automatic_mode_keep_warned_hypoxias_above_3_mg_l():
    """Three cage farms, hypoxias only (three a site a month): every one crosses 3 mg/L as
    simulated; re-simulated with the aerators switched on by the warnings, fewer do."""
    from tidefield.protocol.registry import load_sites
    from tidefield.server.detect.evaluate import aerator_rerun, run_fleet
    from tidefield.sim.fleet import Fleet
    from tidefield.sim.scenario import scenario_plan

    end = T0 + 10 * DAY
    sites = [s for s in load_sites() if s.kind == "cage_farm"][:3]
    fleet = Fleet(sites, seed=11, plan=scenario_plan(T0, end, events_per_site=3.0,
                                                     event_kinds=("hypoxia",)))
    rules = load_rules()
    run = run_fleet(fleet, T0, end, ruleset=rules, warmup_days=2.0)
    result = aerator_rerun(fleet, fleet.labels(T0, end), run.alerts, rules, T0, end)
    assert result.events >= 2 and result.crossed_without == result.events
    assert result.aerated == result.events
    assert result.crossed_with < result.events


def test_the_per_second_angle_table_is_the_angle_computed_per_reading():
    """The kernel reads a whole second's cos and sin of the day's angle from a table: they
    must be the very numbers computing them at the reading gives (bit for bit)."""
    import math

    table = _kernels.day_angles()
    assert table.shape == (DAY // 1000, 2)
    for t in (T0, T0 + 1_000, T0 + 12 * HOUR + 34 * MIN + 56_000, T0 + DAY - 1_000):
        angle = _kernels.OMEGA * (float(t) % DAY)
        k = (t % DAY) // 1000
        assert table[k, 0] == math.cos(angle) and table[k, 1] == math.sin(angle)


@pytest.mark.parametrize(("params", "walked"), [
    ({}, True),  # 15-minute steps, UTC+8: every step's local hour walked exactly
    ({"tz_offset_hours": 5.0 + 1e-7}, False),  # a fraction of a millisecond: the modulo
    ({"step_minutes": 10.0 / 7.0}, False),  # steps off whole milliseconds: the modulo
])
def test_the_local_hours_of_a_look_ahead_match_the_twin_walked_or_not(params, walked):
    """A frost warning's crossing hours: the kernel walks a step's local hour in exact
    whole milliseconds where it can, else takes the modulo; both equal the twin's. Readings
    on whole seconds and off them (the angle table and its fallback)."""
    from tidefield.server.detect.forecast._layout import FC_WHOLE_STEPS

    rng = np.random.default_rng(11)
    rows, times, values = _batch(rng, 2.0, walk=0.05)
    times = times + (rng.random(times.size) < 0.3) * 7  # some readings 7 ms off a second
    order = np.argsort(times, kind="stable")
    rows, times, values = rows[order], times[order], values[order]
    broken = np.zeros(rows.size, dtype=bool)
    forecaster = Forecaster(SERIES, load_rules(), ForecastParams(warm_days=0.5, **params))
    assert bool(forecaster.cfg[1, FC_WHOLE_STEPS] == 1.0) is walked
    got = forecaster.advance(rows, times, values, broken)
    want, _ = twin.advance(rows, times, values, broken, forecaster.cfg)
    for column, name in enumerate(("confidence", "crossing_ms", "low", "high")):
        npt.assert_allclose(getattr(got, name), want[:, column], rtol=1e-9, atol=1e-9,
                            err_msg=name)
    frost = rows == 1  # the orchard's air: crossings only between 19 and 8 local
    assert np.isfinite(got.confidence[frost]).any()
    crossing = got.crossing_ms[frost]
    crossing = crossing[np.isfinite(crossing)]
    tz = forecaster.params.tz_offset_hours * HOUR
    hours = ((crossing + tz) % DAY) / HOUR
    assert ((hours >= 19.0) | (hours < 8.0)).all()


def test_the_readings_taken_for_broken_are_faults_but_gaps_and_a_lone_series_drift():
    """What the rules and forecasts skip as broken sensor output (``broken_readings``, the
    engine's and the bench's): every fault but a gap; a drift only of a series compared
    with other sensors, a lone one's being a guess from its own level."""
    from tidefield.server.detect._layout import (
        C_GROUP,
        C_PARTNER,
        CAT_EVENT,
        CAT_FAULT,
        CAT_NONE,
        K_DRIFT,
        K_GAP,
        K_LEVEL,
        K_NONE,
        K_SPIKE,
        K_STUCK,
    )
    from tidefield.server.detect.detector import Scores
    from tidefield.server.detect.engine import broken_readings

    series = [SeriesInfo(k, f"s-{k}", f"s-{k}-sonde", "water_temperature", 60.0, "sonde")
              for k in range(4)]
    series.append(SeriesInfo(4, "s-0", "s-0-sonde", "dissolved_oxygen", 60.0, "sonde"))
    detector = Detector(series)
    assert (detector.cfg[:4, C_GROUP] >= 0.0).all()  # compared across the four sites
    assert detector.cfg[4, C_GROUP] < 0.0 and detector.cfg[4, C_PARTNER] < 0.0  # lone
    cases = [  # (row, component, category, broken)
        (0, K_DRIFT, CAT_FAULT, True), (4, K_DRIFT, CAT_FAULT, False),
        (4, K_SPIKE, CAT_FAULT, True), (4, K_STUCK, CAT_FAULT, True),
        (1, K_GAP, CAT_FAULT, False), (4, K_GAP, CAT_FAULT, False),
        (2, K_LEVEL, CAT_EVENT, False), (3, K_NONE, CAT_NONE, False),
        (4, K_DRIFT, CAT_FAULT, False), (0, K_SPIKE, CAT_FAULT, True),
    ]
    rows = np.array([c[0] for c in cases], dtype=np.int64)
    scores = Scores(np.full(len(cases), 0.7, dtype=np.float32),
                    np.array([c[1] for c in cases], dtype=np.int8),
                    np.array([c[2] for c in cases], dtype=np.int8))
    npt.assert_array_equal(broken_readings(detector, rows, scores), [c[3] for c in cases])
    some = np.array([3, 6, 7])  # no drift in the batch
    npt.assert_array_equal(broken_readings(detector, rows[some], scores.take(some)),
                           [True, False, False])
