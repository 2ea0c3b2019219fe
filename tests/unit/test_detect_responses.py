"""Automatic responses under operator control: suggested by default, issued within the
site's limits (max on-time, cool-down, hours) when its mode is automatic."""

from __future__ import annotations

from tidefield.server.detect.alerts import Alert, AlertKey, AlertOp
from tidefield.server.detect.responses import ResponsePlanner
from tidefield.server.detect.rules import load_rules

T0 = 1_743_465_600_000  # 2025-04-01T00:00Z, 08:00 in Qingdao
MIN = 60_000


def _opened(rule: str, at_ms: int, site: str = "oc-021") -> AlertOp:
    alert = Alert(AlertKey(site, rule, None, None), "forecast", "warning", "m", at_ms, at_ms,
                  0.9, 0.9)
    return AlertOp("opened", alert, at_ms, 0.9)


def _planner(tmp_path, site_changes: str = "") -> ResponsePlanner:
    path = tmp_path / "rules.yaml"
    path.write_text(f"sites:\n{site_changes}" if site_changes else "{}\n")
    return ResponsePlanner(load_rules(path), {"oc-021": "cage_farm", "ag-003": "orchard"})


def test_a_warning_suggests_its_response_unless_the_site_is_automatic(tmp_path):
    planner = _planner(tmp_path)
    (decision,) = planner.decide([_opened("hypoxia_forecast", T0)])
    assert not decision.automatic and decision.reason == "suggest mode"
    assert (decision.device_id, decision.actuator, decision.duration_s) == (
        "oc-021-gw", "aerator", 240 * 60)
    assert decision.note.startswith("suggested response: aerator on for 240 min")
    assert planner.decide([_opened("sensor_fault", T0)]) == []  # no response attached


def test_automatic_runs_keep_their_limits(tmp_path):
    planner = _planner(tmp_path, "  oc-021: {hypoxia_forecast: {response_mode: automatic,\n"
                                 "    response: {actuator: aerator, minutes: 500,\n"
                                 "               max_on_minutes: 120, cooldown_minutes: 60}}}\n")
    (first,) = planner.decide([_opened("hypoxia_forecast", T0)])
    assert first.automatic and first.duration_s == 120 * 60 and first.reason == "max on-time"
    (running,) = planner.decide([_opened("hypoxia_forecast", T0 + 60 * MIN)])
    assert not running.automatic and running.reason == "already running"
    (cooling,) = planner.decide([_opened("hypoxia_forecast", T0 + 150 * MIN)])
    assert not cooling.automatic and cooling.reason == "cool-down"
    (again,) = planner.decide([_opened("hypoxia_forecast", T0 + 181 * MIN)])
    assert again.automatic
    # another site of the same rule stays in suggest mode
    (other,) = planner.decide([_opened("hypoxia_forecast", T0, site="oc-022")])
    assert not other.automatic


def test_frost_fans_start_automatically_only_in_their_hours(tmp_path):
    planner = _planner(tmp_path, "  ag-003: {frost_forecast: {response_mode: automatic}}\n")
    (morning,) = planner.decide([_opened("frost_forecast", T0 + 2 * 60 * MIN, "ag-003")])
    assert not morning.automatic and morning.reason == "outside its hours"  # 10:00 local
    (night,) = planner.decide([_opened("frost_forecast", T0 + 14 * 60 * MIN, "ag-003")])
    assert night.automatic and night.actuator == "frost_fan"  # 22:00 local


def test_the_same_alert_gets_the_same_command_id(tmp_path):
    one = _planner(tmp_path).decide([_opened("hypoxia", T0)])[0]
    two = _planner(tmp_path).decide([_opened("hypoxia", T0)])[0]
    three = _planner(tmp_path).decide([_opened("hypoxia", T0 + MIN)])[0]
    assert one.command_id == two.command_id != three.command_id
