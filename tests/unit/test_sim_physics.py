"""The simulated signals behave like Qingdao: diurnal and seasonal cycles, sun, tide,
oxygen, soil water. Clean signal (no injection) unless a test says otherwise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tidefield.protocol.catalog import METRICS, metrics_of_kind
from tidefield.protocol.registry import load_sites
from tidefield.sim import astro, physics
from tidefield.sim import simulator_twins as reference
from tidefield.sim.events import InjectionPlan
from tidefield.sim.fleet import Fleet

DAY = 86_400_000
HOUR = 3_600_000
APRIL = 1_743_465_600_000  # 2025-04-01T00:00Z
JANUARY = 1_735_689_600_000  # 2025-01-01T00:00Z
FEBRUARY = 1_738_368_000_000
AUGUST = 1_754_006_400_000  # 2025-08-01T00:00Z

# inland orchard (Pingdu), coastal tea garden (Laoshan), greenhouse, barn, port, buoy,
# cage farm, bay raft, coastal station
SITE_IDS = ("ag-001", "ag-150", "ag-010", "ag-012", "oc-045", "oc-060", "oc-021", "oc-001",
            "oc-069")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet([s for s in load_sites() if s.id in SITE_IDS], seed=11)


def series(fleet: Fleet, site: str, template: str, metric: str) -> int:
    return fleet.table.index(site, f"{site}-{template}", metric)


def values(fleet: Fleet, s: int, start: int, days: float) -> tuple[np.ndarray, np.ndarray]:
    return fleet.series_values(s, start, start + int(days * DAY))


def local_hours(times: np.ndarray) -> np.ndarray:
    return ((times + 8 * HOUR) % DAY) / HOUR


def test_every_sensor_metric_has_a_model_in_every_setting_it_is_used():
    from tidefield.protocol.catalog import AGENT_METRICS, DEVICE_TEMPLATES
    from tidefield.sim.sites import setting_of

    for kind, templates in DEVICE_TEMPLATES.items():
        for template in templates:
            for metric in template.metrics:
                model = physics.model_for(metric, setting_of(kind, template.name))
                assert model.metric == metric
    # The rest are the edge agent's own health, reported by the real agent, not a sensor.
    sensed = {m for k in DEVICE_TEMPLATES for m in metrics_of_kind(k)}
    assert set(METRICS) - sensed == set(AGENT_METRICS)


def test_clean_values_stay_physical_and_mostly_typical(fleet):
    chunk = fleet.generate(APRIL, APRIL + 3 * DAY)
    metrics = np.array(fleet.table.metrics)[chunk.series]
    for name in set(metrics.tolist()):
        v = chunk.value[metrics == name]
        meta = METRICS[name]
        assert np.isfinite(v).all(), name
        assert v.min() >= meta.physical[0] and v.max() <= meta.physical[1], name
        outside = np.mean((v < meta.typical[0]) | (v > meta.typical[1]))
        assert outside < 0.05, (name, outside)
        steps = v / meta.resolution
        assert np.allclose(steps, np.rint(steps), atol=1e-6), name  # quantised


def test_air_temperature_peaks_in_the_afternoon_and_humidity_runs_opposite(fleet):
    for site in ("ag-001", "ag-150"):
        times, air = values(fleet, series(fleet, site, "wx", "air_temperature"), APRIL, 30)
        _, humidity = values(fleet, series(fleet, site, "wx", "air_humidity"), APRIL, 30)
        hour = np.floor(local_hours(times)).astype(int)
        air_by_hour = np.bincount(hour, air) / np.bincount(hour)
        rh_by_hour = np.bincount(hour, humidity) / np.bincount(hour)
        assert 12 <= int(np.argmax(air_by_hour)) < 17
        assert 3 <= int(np.argmin(air_by_hour)) <= 7  # near sunrise
        assert np.corrcoef(air_by_hour, rh_by_hour)[0, 1] < -0.9


def test_inland_days_swing_more_than_coastal_ones(fleet):
    def mean_daily_range(site):
        _, air = values(fleet, series(fleet, site, "wx", "air_temperature"), APRIL, 30)
        days = air[: 30 * 1440].reshape(30, 1440)
        return float(np.mean(days.max(axis=1) - days.min(axis=1)))

    assert mean_daily_range("ag-001") > 1.5 * mean_daily_range("ag-150")


def test_seasons_of_air_and_sea(fleet):
    coastal_air = series(fleet, "ag-150", "wx", "air_temperature")
    assert np.mean(values(fleet, coastal_air, JANUARY, 31)[1]) == pytest.approx(-1.0, abs=2.5)
    assert np.mean(values(fleet, coastal_air, AUGUST, 31)[1]) == pytest.approx(25.5, abs=2.0)
    sea = series(fleet, "oc-060", "sonde", "water_temperature")
    assert np.mean(values(fleet, sea, FEBRUARY, 28)[1]) == pytest.approx(4.5, abs=1.5)
    assert np.mean(values(fleet, sea, AUGUST, 31)[1]) == pytest.approx(25.5, abs=1.5)


def test_par_and_radiation_are_zero_whenever_the_sun_is_down(fleet):
    site = next(s for s in fleet.table.sites if s.id == "ag-010")
    for metric, template in (("par", "climate"),):
        times, light = values(fleet, series(fleet, "ag-010", template, metric), APRIL, 30)
        sin_elev, _, _ = reference.sun(site.lat, site.lon, times)
        assert (light[sin_elev <= 0.0] == 0.0).all()
        assert (light[sin_elev > 0.3] > 0.0).all()
    times, ghi = values(fleet, series(fleet, "ag-001", "wx", "solar_radiation"), APRIL, 30)
    orchard = next(s for s in fleet.table.sites if s.id == "ag-001")
    sin_elev, _, _ = reference.sun(orchard.lat, orchard.lon, times)
    assert (ghi[sin_elev <= 0.0] == 0.0).all()
    assert ghi.max() == pytest.approx(1000.0, abs=200.0)  # a clear April noon


def test_dominant_tide_period_is_m2(fleet):
    times, level = values(fleet, series(fleet, "oc-045", "tide", "tide_level"), APRIL, 30)
    assert np.all(np.diff(times) == 60_000)
    level = level - level.mean()
    spectrum = np.abs(np.fft.rfft(level * np.hanning(level.size), n=8 * level.size))
    hours = 1.0 / np.fft.rfftfreq(8 * level.size, d=1.0 / 60.0)[1:]  # periods in hours
    band = (hours > 6.0) & (hours < 30.0)
    period = hours[band][np.argmax(spectrum[1:][band])]
    assert period == pytest.approx(12.4206, rel=0.01)
    assert 1.5 < (level.max() - level.min()) / 2 < 2.5  # springs reach ~2 m (M2+S2+K1+O1)


def test_dissolved_oxygen_is_supersaturated_only_in_daylight(fleet):
    supersaturated = 0
    for site, template in (("oc-021", "sonde"), ("oc-021", "sonde2"), ("oc-001", "sonde"),
                           ("oc-069", "sonde")):
        info = next(s for s in fleet.table.sites if s.id == site)
        times, oxygen = values(fleet, series(fleet, site, template, "dissolved_oxygen"),
                               APRIL, 30)
        _, water = values(fleet, series(fleet, site, template, "water_temperature"), APRIL, 30)
        _, salt = values(fleet, series(fleet, site, "sonde", "salinity"), APRIL, 30)
        saturation = reference.oxygen_saturation(water, salt)
        sin_elev, _, _ = reference.sun(info.lat, info.lon, times)
        above = oxygen > saturation
        assert not (above & (sin_elev <= 0.0)).any(), site
        supersaturated += int(above.sum())
    assert supersaturated > 0  # and it does happen on sunny days


def test_cage_interior_has_less_oxygen_than_outside(fleet):
    _, outer = values(fleet, series(fleet, "oc-021", "sonde", "dissolved_oxygen"), APRIL, 5)
    _, inner = values(fleet, series(fleet, "oc-021", "sonde2", "dissolved_oxygen"), APRIL, 5)
    assert inner.mean() < outer.mean() - 0.3


def _moisture_around(fleet, site, start, end):
    s = series(fleet, site, "soil", "soil_moisture")
    rises = []
    for begin, finish in fleet.irrigation_events(site, start, end):
        t, v = fleet.series_values(s, begin - HOUR, finish + HOUR)
        before = v[t < begin][-1]
        after = v[t >= finish + 15 * 60_000][0]
        rises.append(after - before)
    return np.array(rises)


def test_soil_moisture_rises_at_every_scheduled_irrigation(fleet):
    for site in ("ag-010", "ag-001"):  # greenhouse (daily), orchard (every 5 days)
        rises = _moisture_around(fleet, site, APRIL + 5 * DAY, APRIL + 30 * DAY)
        assert rises.size >= 4
        assert (rises > 1.0).all(), (site, rises)


def test_soil_dries_between_irrigations_and_stays_in_range(fleet):
    s = series(fleet, "ag-010", "soil", "soil_moisture")
    times, v = values(fleet, s, APRIL, 30)
    assert 15.0 < v.mean() < 40.0
    events = fleet.irrigation_events("ag-010", APRIL + DAY, APRIL + 30 * DAY)
    for (_, end), (next_start, _) in itertools.pairwise(events):
        between = v[(times > end + HOUR) & (times < next_start)]
        assert between[-1] < between[0]  # drying


def test_a_failed_irrigation_does_not_wet_the_soil():
    site = next(s for s in load_sites() if s.id == "ag-010")
    plan = InjectionPlan(faults_per_series=0.0, events_per_site=4.0,
                         event_kinds=("irrigation_failure",), anchor_ms=APRIL)
    injected = Fleet([site], seed=11, plan=plan)
    labels = [lb for lb in injected.labels(APRIL, APRIL + 30 * DAY)
              if lb.metric == "soil_moisture"]
    assert labels
    s = injected.table.index("ag-010", "ag-010-soil", "soil_moisture")
    clean = injected.with_plan(None)
    for label in labels:
        missed = [e for e in clean.irrigation_events("ag-010", label.start_ms, label.end_ms)]
        assert missed
        _, wet = clean.series_values(s, label.start_ms, label.end_ms)
        _, dry = injected.series_values(s, label.start_ms, label.end_ms)
        assert np.nanmax(wet - dry) > 3.0
        assert np.nanmin(dry) < np.nanmin(wet)  # below its usual range


def test_greenhouse_co2_high_at_night_low_by_day(fleet):
    times, co2 = values(fleet, series(fleet, "ag-010", "climate", "co2"), JANUARY, 14)
    hour = local_hours(times)
    assert 600 <= np.median(co2[(hour > 4) & (hour < 6)]) <= 900  # before dawn
    assert 330 <= np.median(co2[(hour > 12) & (hour < 14)]) <= 420  # midday


def test_storm_free_weather_couples_wind_and_waves(fleet):
    times, wind = values(fleet, series(fleet, "oc-060", "met", "wind_speed"), APRIL, 30)
    wave_times, waves = values(fleet, series(fleet, "oc-060", "wave", "wave_height"), APRIL, 30)
    wind_at_waves = np.interp(wave_times - 2 * HOUR, times, wind)
    assert np.corrcoef(wind_at_waves, waves)[0, 1] > 0.6
    _, pressure = values(fleet, series(fleet, "oc-060", "met", "air_pressure"), APRIL, 30)
    assert np.corrcoef(wind, pressure)[0, 1] < 0.0  # fronts: wind up, pressure down


def test_tidal_current_follows_the_rate_of_change_of_the_level(fleet):
    site = next(s for s in fleet.table.sites if s.id == "oc-021")
    s = series(fleet, "oc-021", "adcp", "current_speed")
    times, speed = values(fleet, s, APRIL, 10)
    p = fleet.table.arrays.params[s]
    _, rate = reference.tide(times, astro.QINGDAO_AMPLITUDE_M, astro.QINGDAO_PHASE_DEG,
                             p[physics.TIDE_LAG_DEG])
    assert np.corrcoef(np.abs(rate), speed)[0, 1] > 0.7
    assert site.kind == "cage_farm"


def test_the_rain_gauge_counts_the_rain_that_fell(fleet):
    s = series(fleet, "ag-001", "wx", "rainfall")
    times, tips = values(fleet, s, AUGUST, 30)
    assert (tips >= 0).all() and np.allclose(tips / 0.2, np.rint(tips / 0.2))
    p, keys = fleet.table.arrays.params[s], fleet.table.arrays.keys[s]
    fallen = 0.0
    first_day = (AUGUST + 8 * HOUR) // DAY
    for day in range(first_day - 2, first_day + 32):
        for slot in (0, 1):
            start, end, rate = physics.rain_event(p, keys, day, slot)
            overlap = min(end, times[-1]) - max(start, times[0] - 60_000)
            fallen += rate * max(0.0, overlap) / HOUR
    assert fallen > 20.0  # August is wet
    assert tips.sum() == pytest.approx(fallen, abs=0.2 * 40)  # bucket remainders, per day
