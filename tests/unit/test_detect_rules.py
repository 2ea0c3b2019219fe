"""Domain rules and the alert lifecycle: minimum duration, hysteresis, one alert per
episode and site, spikes counted only once they come back, silence, bad rule files."""

from __future__ import annotations

import numpy as np
import pytest

from tidefield.server.detect._layout import RS_ACTIVE, RS_BASE
from tidefield.server.detect.alerts import AlertBook, MemorySink
from tidefield.server.detect.detector import Detector, SeriesInfo
from tidefield.server.detect.engine import Engine
from tidefield.server.detect.rules import RulesError, load_rules
from tidefield.server.detect.tuning import DetectorParams

T0 = 1_743_465_600_000
MIN = 60_000
PARAMS = DetectorParams(warm_n=150)


def _engine(rules=None):
    series = [SeriesInfo(0, "cg-1", "cg-1-sonde", "dissolved_oxygen", 60.0, "sonde",
                         "cage_farm"),
              SeriesInfo(1, "cg-1", "cg-1-sonde2", "dissolved_oxygen", 60.0, "sonde2",
                         "cage_farm")]
    return Engine(Detector(series, PARAMS), rules or load_rules())


def _run(engine, values_by_row, now=None):
    n = len(values_by_row[0])
    rows = np.repeat(np.arange(len(values_by_row)), n).reshape(len(values_by_row), n).T.ravel()
    times = np.repeat(T0 + np.arange(n, dtype=np.int64) * MIN, len(values_by_row))
    values = np.column_stack(values_by_row).ravel()
    book, sink = AlertBook(engine.rules), MemorySink()
    _, transitions = engine.process(rows, times, values)
    if now is not None:
        transitions += engine.tick(now)
    sink.apply(book.apply(transitions))
    return sink


def _oxygen(n, dips):
    v = np.full(n, 7.0) + np.round(np.sin(np.arange(n) / 50.0) * 0.05, 2)
    for start, stop, level in dips:
        v[start:stop] = level + np.round(np.sin(np.arange(stop - start) / 7.0) * 0.05, 2)
    return v


def test_hypoxia_on_two_sondes_is_one_alert_opened_after_the_minimum_duration():
    a = _oxygen(900, [(300, 600, 2.5)])
    b = _oxygen(900, [(320, 620, 2.6)])
    sink = _run(_engine(), [a, b])
    hypoxia = [x for x in sink.alerts if x.key.rule == "hypoxia"]
    assert len(hypoxia) == 1
    alert = hypoxia[0]
    assert alert.key.series_key is None and alert.category == "event"
    # a sudden drop is first held as a possible spike (3 readings), then taken as real:
    # the alert dates from the first reading the rule could trust
    assert T0 + 300 * MIN <= alert.opened_ms <= T0 + 304 * MIN
    assert alert.closed_ms is not None and alert.closed_ms >= T0 + 620 * MIN
    assert alert.peak < 2.7 and alert.severity == "critical"
    assert "mg/L" in alert.message


def test_a_dip_shorter_than_the_minimum_opens_nothing_and_hysteresis_keeps_one_alert():
    short = _oxygen(900, [(300, 310, 2.5)])
    sink = _run(_engine(), [short, _oxygen(900, [])])
    assert not [x for x in sink.alerts if x.key.rule == "hypoxia"]
    # under 3.0, then 3.3 (between threshold and clear: still on), then under again
    wobbly = _oxygen(900, [(300, 400, 2.5), (400, 430, 3.3), (430, 500, 2.5)])
    sink = _run(_engine(), [wobbly, _oxygen(900, [])])
    assert len([x for x in sink.alerts if x.key.rule == "hypoxia"]) == 1


def test_a_spike_alerts_once_it_comes_back_a_held_step_does_not():
    spike = _oxygen(900, [])
    spike[500] = 15.0
    sink = _run(_engine(), [spike, _oxygen(900, [])])
    faults = [x for x in sink.alerts if x.key.rule == "sensor_fault"]
    assert len(faults) == 1 and faults[0].component == "spike"
    assert faults[0].opened_ms == T0 + 500 * MIN and faults[0].key.series_key == 0
    step = _oxygen(900, [(500, 900, 12.0)])
    sink = _run(_engine(), [step, _oxygen(900, [])])
    assert not [x for x in sink.alerts if x.key.rule == "sensor_fault"
                and x.component == "spike"]


def test_silence_opens_no_data_and_the_next_reading_closes_it():
    engine = _engine()
    ok = _oxygen(200, [])
    sink = _run(engine, [ok, ok], now=T0 + 300 * MIN)
    silent = [x for x in sink.alerts if x.key.rule == "no_data"]
    assert len(silent) == 2 and silent[0].opened_ms == T0 + 200 * MIN
    book = AlertBook(engine.rules, silent)
    _, transitions = engine.process(np.array([0]), np.array([T0 + 301 * MIN]),
                                    np.array([7.0]))
    ops = book.apply(transitions)
    assert [op.action for op in ops] == ["closed"]


def test_site_overrides_and_bad_rule_files(tmp_path):
    override = tmp_path / "rules.yaml"
    override.write_text("sites:\n  cg-1:\n    hypoxia: {threshold: 4.0, clear: 4.5}\n")
    a = _oxygen(900, [(300, 600, 3.5)])
    sink = _run(_engine(load_rules(override)), [a, _oxygen(900, [])])
    assert [x.key.rule for x in sink.alerts if x.category == "event"] == ["hypoxia"]
    for text, reason in [("rules: [1, 2]", "rules"),
                         ("sites:\n  cg-1:\n    nope: {threshold: 1}\n", "unknown rule"),
                         ("rules:\n  x: {condition: below, threshold: 1, clear: 0, "
                          "metric: co2, category: event, message: m}\n", "clear"),
                         (":\n- bad", "YAML")]:
        override.write_text(text)
        with pytest.raises(RulesError, match=reason):
            load_rules(override)
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


def test_a_silence_no_clock_caught_is_found_when_the_data_resumes():
    values = _oxygen(400, [])
    times = T0 + np.arange(400, dtype=np.int64) * MIN
    keep = (np.arange(400) < 200) | (np.arange(400) >= 204)  # four readings missing
    engine = _engine()
    book, sink = AlertBook(engine.rules), MemorySink()
    _, transitions = engine.process(np.zeros(keep.sum(), dtype=np.int64), times[keep],
                                    values[keep])
    sink.apply(book.apply(transitions))
    silent = [x for x in sink.alerts if x.key.rule == "no_data"]
    assert len(silent) == 1
    assert silent[0].opened_ms == T0 + 200 * MIN and silent[0].closed_ms == T0 + 204 * MIN
    # three missing readings are a gap of four intervals, over the rule's 3.5: two are not
    keep = (np.arange(400) < 200) | (np.arange(400) >= 202)
    engine = _engine()
    _, transitions = engine.process(np.zeros(keep.sum(), dtype=np.int64), times[keep],
                                    values[keep])
    assert not AlertBook(engine.rules).apply(transitions)


def test_a_rule_that_requires_another_opens_only_while_that_one_holds(tmp_path):
    override = tmp_path / "rules.yaml"
    override.write_text(
        "rules:\n"
        "  low_a: {metric: dissolved_oxygen, condition: below, threshold: 3.0, clear: 3.6,"
        " category: event, message: m, requires: gate, scope: site}\n"
        "  gate: {metric: dissolved_oxygen, condition: below, threshold: 5.0, clear: 5.5,"
        " category: event, message: g, alert: false}\n")
    rules = load_rules(override)
    low = _oxygen(900, [(300, 600, 2.5)])
    # the second sonde never goes under 5: the gate is the first instance at the site,
    # the first sonde, which does
    sink = _run(_engine(rules), [low, _oxygen(900, [])])
    assert [x.key.rule for x in sink.alerts if x.key.rule in ("low_a", "gate")] == ["low_a"]
    override.write_text(override.read_text().replace("threshold: 5.0, clear: 5.5",
                                                     "threshold: 1.0, clear: 1.5"))
    sink = _run(_engine(load_rules(override)), [low, _oxygen(900, [])])
    assert not [x for x in sink.alerts if x.key.rule in ("low_a", "gate")]
    override.write_text("rules:\n  x: {metric: co2, condition: above, threshold: 1, clear: 0,"
                        " category: event, message: m, requires: nope}\n")
    with pytest.raises(RulesError, match="requires unknown rule"):
        load_rules(override)


def test_a_fall_from_the_running_high_is_not_followed_down_by_a_level(tmp_path):
    # oxygen rises 7 -> 9 over 3 h, then falls to 6 within 30 min and holds: the
    # running level lagged the rise and follows the fall, so it reads a fall under 2;
    # the running high went up with the rise and reads about 2.6
    override = tmp_path / "rules.yaml"
    rule = ("rules:\n  drop: {metric: dissolved_oxygen, condition: fall, threshold: 2.0,"
            " clear: 1.0, tau_hours: 2, category: event, message: m, scope: site%s}\n")
    v = np.concatenate([np.full(300, 7.0), np.linspace(7.0, 9.0, 180),
                        np.linspace(9.0, 6.0, 30), np.full(300, 6.0)])
    v = v + np.round(np.sin(np.arange(len(v)) / 7.0) * 0.02, 3)
    drops = {}
    for high in (False, True):
        override.write_text(rule % (", from_high: true" if high else ""))
        sink = _run(_engine(load_rules(override)), [v, v])
        drops[high] = [a for a in sink.alerts if a.key.rule == "drop"]
    assert not drops[False]
    assert len(drops[True]) == 1
    assert T0 + 480 * MIN <= drops[True][0].opened_ms <= T0 + 515 * MIN


def _storm(fall_hpa, fall_hours, rules=None, gale_after_hours=0.0, low_hours=24.0):
    """A coastal station's pressure and wind every 10 min: two calm days at 1015 hPa
    (a semidiurnal wobble of 0.2 hPa), then a fall of ``fall_hpa`` at an even rate over
    ``fall_hours``, held for ``low_hours``; a gale of 18 m/s blows for 3 h from
    ``gale_after_hours`` after the fall. The storm_wind alerts and the engine."""
    series = [SeriesInfo(0, "cs-1", "cs-1-wx", "air_pressure", 600.0, "wx",
                         "coastal_station"),
              SeriesInfo(1, "cs-1", "cs-1-wx", "wind_speed", 600.0, "wx", "coastal_station")]
    engine = Engine(Detector(series, PARAMS), rules or load_rules())
    calm, falling, after = 2 * 144, int(fall_hours * 6), int(low_hours * 6)
    gale = calm + falling + int(gale_after_hours * 6)
    n = calm + falling + after
    i = np.arange(n)
    pressure = 1015.0 + 0.2 * np.sin(2.0 * np.pi * i / 74.5)
    pressure[calm:] -= fall_hpa * np.minimum(np.arange(n - calm) + 1, falling) / falling
    wind = 6.0 + np.round(np.sin(i / 5.0), 1)
    wind[gale:gale + 18] = 18.0
    rows = np.tile([0, 1], n)
    times = np.repeat(T0 + i.astype(np.int64) * 10 * MIN, 2)
    _, transitions = engine.process(rows, times,
                                    np.column_stack([np.round(pressure, 1), wind]).ravel())
    sink = MemorySink()
    sink.apply(AlertBook(engine.rules).apply(transitions))
    return [a for a in sink.alerts if a.key.rule == "storm_wind"], engine


def test_a_slow_storm_is_judged_from_the_high_of_the_last_12_hours(tmp_path):
    # 14 hPa over 10 h: a high relaxing with a 12-h time constant follows the fall down
    # (it reads at most about 9.7 hPa under it), the windowed high stays at the calm level
    storms, engine = _storm(14.0, 10.0)
    assert len(storms) == 1
    gale = T0 + (2 * 144 + 60) * 10 * MIN
    assert gale <= storms[0].opened_ms <= gale + 30 * MIN
    k = next(k for k, inst in enumerate(engine.rules.instances)
             if inst.rule == "storm_pressure")
    # a day at the low: the window has slid past the calm high, the low is no fall now
    assert engine.rules.state[k, RS_BASE] < 1002.0
    assert engine.rules.state[k, RS_ACTIVE] == 0.0
    override = tmp_path / "rules.yaml"
    override.write_text("sites:\n  cs-1: {storm_pressure: {high_window_hours: null}}\n")
    storms, _ = _storm(14.0, 10.0, load_rules(override))
    assert storms == []  # the relaxing high would miss it
    # a fall under the threshold is no storm on either, the gale a windy day
    assert _storm(8.0, 10.0)[0] == []
    # the forecast keeps its own relaxing high: the same warnings either way
    assert engine.forecaster.cfg.tolist() == Engine(
        engine.detector, load_rules(override)).forecaster.cfg.tolist()


def test_a_fall_judged_from_the_windowed_high_holds_for_two_windows_at_most():
    # 12 hPa in an hour, then the low for three days: the high before the fall is held
    # while the condition holds (a gale 15 h on is a storm), but not past two windows
    # after it opened (a high a sensor's burst set would hold it for good)
    assert len(_storm(12.0, 1.0, gale_after_hours=15.0, low_hours=72.0)[0]) == 1
    storms, engine = _storm(12.0, 1.0, gale_after_hours=30.0, low_hours=72.0)
    assert storms == []
    k = next(k for k, inst in enumerate(engine.rules.instances)
             if inst.rule == "storm_pressure")
    assert engine.rules.state[k, RS_ACTIVE] == 0.0


def test_a_windowed_high_is_for_a_fall_from_a_high(tmp_path):
    override = tmp_path / "rules.yaml"
    override.write_text("rules:\n  x: {metric: air_pressure, condition: fall, threshold: 5,"
                        " clear: 2, high_window_hours: 6, category: event, message: m}\n")
    with pytest.raises(RulesError, match="high_window_hours"):
        load_rules(override)


def _farm_engine(kind, rules=None):
    series = [SeriesInfo(0, "ag-1", "ag-1-soil", "soil_moisture", 600.0, "soil", kind),
              SeriesInfo(1, "ag-1", "ag-1-wx", "rainfall", 600.0, "wx", kind)]
    return Engine(Detector(series, PARAMS), rules or load_rules())


def _soil(days, waterings, showers):
    """10-min soil moisture drying 0.01 %/reading, +5 % at each watering or shower (in
    days), and the rain gauge's mm (2 mm in each reading of a shower's hour: 12 mm,
    enough to wet the soil 5 %)."""
    n = int(days * 144)
    soil = np.empty(n)
    rain = np.zeros(n)
    level = 30.0
    wet = {int(d * 144) for d in (*waterings, *showers)}
    for i in range(n):
        level = level + 5.0 if i in wet else level - 0.01
        soil[i] = level
    for d in showers:
        rain[int(d * 144) - 3:int(d * 144) + 3] = 2.0
    return soil, rain


def _irrigation_alerts(soil, rain, kind="tea_garden", rules=None):
    # tea gardens declare no schedule in the bundled rules: the interval is learned
    engine = _farm_engine(kind, rules)
    n = len(soil)
    rows = np.tile([0, 1], n)
    times = np.repeat(T0 + np.arange(n, dtype=np.int64) * 10 * MIN, 2)
    values = np.column_stack([soil, rain]).ravel()
    _, transitions = engine.process(rows, times, values)
    sink = MemorySink()
    sink.apply(AlertBook(engine.rules).apply(transitions))
    return [a for a in sink.alerts if a.key.rule == "irrigation_failure"]


def test_a_rise_while_the_rain_gauge_counts_rain_is_no_watering():
    # waterings every 2 days; a shower at day 7 between them; the watering of day 10
    # fails: the gap since day 8 exceeds 1.5 x 2 days at day 11, shower or not
    soil, rain = _soil(14, [0.5, 2.5, 4.5, 6.5, 8.5, 12.5], [9.5])
    alerts = _irrigation_alerts(soil, rain)
    assert len(alerts) == 1
    assert T0 + 11.5 * 86_400_000 <= alerts[0].opened_ms < T0 + 12.5 * 86_400_000
    # the same rise without rain on the gauge is a watering: no failure seen
    assert not _irrigation_alerts(soil, np.zeros_like(rain))


def test_a_watering_in_drizzle_is_a_watering():
    # waterings every 2 days; the one at day 8.5 falls in an hour of 0.2-mm tips (1.2 mm
    # can wet the soil 1.2 % at the most, not the 5 % it rose): a watering, no failure
    soil, rain = _soil(14, [0.5, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5], [])
    rain[int(8.5 * 144) - 3:int(8.5 * 144) + 3] = 0.2
    assert not _irrigation_alerts(soil, rain)
    # the same rise under 12 mm of rain is the rain: the gap from day 6.5 runs to 10.5
    rain[int(8.5 * 144) - 3:int(8.5 * 144) + 3] = 2.0
    assert len(_irrigation_alerts(soil, rain)) == 1


def test_rain_explains_a_rise_only_while_the_gauge_still_reports_it():
    # the gauge counts rain at day 7 and then goes quiet (offline, or every reading
    # called broken): two hours on, the rain no longer explains the waterings
    soil, rain = _soil(14, [0.5, 2.5, 4.5, 6.5, 8.5, 10.5, 12.5], [])
    rain[int(7.0 * 144) - 3:int(7.0 * 144) + 3] = 1.0
    engine = _farm_engine("tea_garden")
    n = len(soil)
    quiet = int(7.0 * 144) + 3  # the gauge's last reading
    rows = np.concatenate([np.tile([0, 1], quiet), np.zeros(n - quiet, dtype=np.int64)])
    times = np.concatenate([np.repeat(T0 + np.arange(quiet, dtype=np.int64) * 10 * MIN, 2),
                            T0 + np.arange(quiet, n, dtype=np.int64) * 10 * MIN])
    values = np.concatenate([np.column_stack([soil[:quiet], rain[:quiet]]).ravel(),
                             soil[quiet:]])
    _, transitions = engine.process(rows, times, values)
    sink = MemorySink()
    sink.apply(AlertBook(engine.rules).apply(transitions))
    assert not [a for a in sink.alerts if a.key.rule == "irrigation_failure"]


def test_unless_must_name_a_known_rule(tmp_path):
    override = tmp_path / "rules.yaml"
    override.write_text("rules:\n  x: {metric: soil_moisture, condition: no_rise, threshold: 1.5,"
                        " clear: 1.5, category: event, message: m, unless: nope}\n")
    with pytest.raises(RulesError, match="unknown rule 'nope' in `unless`"):
        load_rules(override)


def test_a_declared_schedule_judges_from_the_first_reading(tmp_path):
    # one watering at day 0.5, then none: a learned interval needs three waterings and
    # never judges; a declared one (every 2 days, per kind or per site) alerts once the
    # soil has gone 1.5 x 2 days without a rise, and the next watering closes it
    soil, rain = _soil(8, [0.5, 6.0], [])
    assert not _irrigation_alerts(soil, rain)
    override = tmp_path / "rules.yaml"
    override.write_text("kinds:\n  tea_garden: {irrigation_failure: {every_hours: 48}}\n")
    for rules in (load_rules(override), None):
        if rules is None:
            override.write_text("sites:\n  ag-1: {irrigation_failure: {every_hours: 48}}\n")
            rules = load_rules(override)
        alerts = _irrigation_alerts(soil, rain, rules=rules)
        assert len(alerts) == 1
        assert alerts[0].opened_ms == pytest.approx(T0 + 3.5 * 86_400_000, abs=20 * MIN)
        assert alerts[0].closed_ms == pytest.approx(T0 + 6.0 * 86_400_000, abs=20 * MIN)
    # no reading has risen yet: the clock starts at the first reading
    soil, rain = _soil(8, [6.0], [])
    alerts = _irrigation_alerts(soil, rain, rules=rules)
    assert len(alerts) == 1
    assert alerts[0].opened_ms == pytest.approx(T0 + 3.0 * 86_400_000, abs=20 * MIN)
    # a site's changes go over its kind's; bundled orchards water every 5 days
    override.write_text("kinds:\n  orchard: {irrigation_failure: {threshold: 2.0}}\n"
                        "sites:\n  ag-1: {irrigation_failure: {clear: 2.0}}\n")
    spec = load_rules(override).for_site("ag-1", "orchard")["irrigation_failure"]
    assert (spec.every_hours, spec.threshold, spec.clear) == (120.0, 2.0, 2.0)
    override.write_text("kinds:\n  orchard: {nope: {threshold: 2.0}}\n")
    with pytest.raises(RulesError, match="kind orchard overrides unknown rule 'nope'"):
        load_rules(override)


def test_evaluate_takes_a_rules_file_and_refuses_a_bad_one(tmp_path):
    from typer.testing import CliRunner

    from tidefield.cli import app

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: {hypoxia: {condition: sideways}}\n")
    result = CliRunner().invoke(app, ["detect", "evaluate", "--rules", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "hypoxia" in result.stderr

    # every rule switched off at every kind of site: the scenario runs with no alert (the
    # bundled rules raise one on this day of these two sites)
    from tidefield.protocol.registry import load_sites

    off = tmp_path / "off.yaml"
    every_rule_off = ", ".join(f"{name}: {{enabled: false}}" for name in load_rules().rules)
    off.write_text("kinds:\n" + "".join(f"  {kind}: {{{every_rule_off}}}\n"
                                         for kind in {site.kind for site in load_sites()}))
    result = CliRunner().invoke(app, ["detect", "evaluate", "--rules", str(off), "--seed", "5",
                                      "--days", "1", "--sites", "2", "--no-clean"])
    assert result.exit_code == 0, result.output
    assert ", 0 alerts," in result.output.splitlines()[0]


# --- live rules -----------------------------------------------------------------------------

def _step(engine, rows, start, values):
    n = len(values)
    times = T0 + (start + np.arange(n, dtype=np.int64)) * MIN
    out = engine.step(np.asarray(rows, dtype=np.int64), times, np.asarray(values, dtype=float),
                      int(times[-1]))
    return out.ops


def test_live_changes_merge_field_by_field_and_are_checked():
    base = load_rules()
    live = base.with_changes({"cg-1": {"hypoxia": {"threshold": 4.0, "clear": 4.5}}},
                             {"cage_farm": {"hypoxia": {"min_minutes": 0}}})
    at_site = live.for_site("cg-1", "cage_farm")["hypoxia"]
    assert (at_site.threshold, at_site.clear, at_site.min_minutes) == (4.0, 4.5, 0.0)
    assert live.for_site("cg-2", "cage_farm")["hypoxia"].threshold == 3.0
    assert base.for_site("cg-1", "cage_farm")["hypoxia"].threshold == 3.0  # base unchanged
    # the file's kind changes stay under the live ones
    greenhouse = live.for_site("gh-1", "greenhouse")["irrigation_failure"]
    assert greenhouse.every_hours == 24
    for sites, reason in (({"cg-1": {"hypoxia": {"threshold": 5.0, "clear": 4.0}}}, "clear"),
                          ({"cg-1": {"nope": {"threshold": 1.0}}}, "unknown rule"),
                          ({"cg-1": {"hypoxia": {"colour": "red"}}}, "colour"),
                          ({"cg-1": {"hypoxia": 4.0}}, "mapping")):
        with pytest.raises(RulesError, match=reason):
            base.with_changes(sites, {})


def test_a_changed_limit_judges_the_next_reading_and_keeps_the_learned_state():
    engine = _engine()
    warm = _oxygen(400, [])
    rows = np.repeat([0, 1], 400).reshape(2, 400).T.ravel()
    _step(engine, rows, 0, np.column_stack([warm, warm]).ravel())
    assert _step(engine, [0, 1] * 20, 400, [3.5] * 40) == []  # bundled limit 3.0
    detector_state = engine.detector.state.copy()
    rule_state = {(i.rule, i.row): engine.rules.state[k].copy()
                  for k, i in enumerate(engine.rules.instances)}
    assert engine.change_rules(load_rules().with_changes(
        {"cg-1": {"hypoxia": {"threshold": 4.0, "clear": 4.5, "min_minutes": 0}}}, {}),
        int(T0 + 420 * MIN)) == []
    # what was learned stays: the detector's state and every rule instance's
    assert np.array_equal(engine.detector.state, detector_state, equal_nan=True)
    assert {(i.rule, i.row) for i in engine.rules.instances} == set(rule_state)
    for k, inst in enumerate(engine.rules.instances):
        assert np.array_equal(engine.rules.state[k], rule_state[inst.rule, inst.row],
                              equal_nan=True)
    ops = _step(engine, [0, 1] * 5, 440, [3.5] * 10)
    opened = [op for op in ops if op.action == "opened"]
    assert len(opened) == 1 and opened[0].alert.key.rule == "hypoxia"
    assert "under 4 mg/L" in opened[0].alert.message
    # a rule switched off closes the alert it held open, at the watermark
    closed = engine.change_rules(load_rules().with_changes(
        {"cg-1": {"hypoxia": {"enabled": False}}}, {}), int(T0 + 460 * MIN))
    assert [(op.action, op.alert.key.rule, op.time_ms) for op in closed] == [
        ("closed", "hypoxia", T0 + 460 * MIN)]
    assert engine.book.active == {}
