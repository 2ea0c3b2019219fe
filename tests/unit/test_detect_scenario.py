"""The detector on a small labelled firmware-sim scenario, scored as `tidefield detect
evaluate` scores it: event-level F1 per kind, fault-vs-event classification, false alerts
on the same fleet fault-free.

Seed 5 was never used for tuning (tuning: seeds 11 to 14; report: 61, and 59, 53, 41, 23
and 37 before). A kind under the target F1 on the report seed would be marked xfail here
(not strict: on this small scenario it may pass by the luck of a few labels, which proves
nothing); since seed 61 none is, and every kind with enough labels must reach it.
"""

from __future__ import annotations

import math

import pytest

from tidefield.protocol.registry import load_sites
from tidefield.protocol.units import DAY_MS
from tidefield.server.detect.evaluate import (
    false_alerts_per_site_week,
    run_fleet,
    score_alerts,
)
from tidefield.sim.fleet import Fleet
from tidefield.sim.scenario import scenario_plan

SEED = 5
SITES = 30
DAYS = 6
START_MS = 1_743_465_600_000  # 2025-04-01T00:00Z
TARGET_F1 = 0.9
# under the target F1 on the report seed (docs/detection.md), so expected to fail here
BELOW_TARGET: set[str] = set()
MIN_LABELS = 5  # an F1 over fewer labels says little


@pytest.fixture(scope="module")
def scenario():
    sites = load_sites()
    chosen = sites[::len(sites) // SITES][:SITES]
    end_ms = START_MS + DAYS * DAY_MS
    # denser than the 30-day scenarios (one fault per series, two events per site) so a
    # few days carry enough labels of every kind to score
    plan = scenario_plan(START_MS, end_ms, faults_per_series=1.0, events_per_site=2.0)
    fleet = Fleet(chosen, seed=SEED, plan=plan)
    run = run_fleet(fleet, START_MS, end_ms)
    evaluation = score_alerts(fleet, fleet.labels(START_MS, end_ms), run.alerts, end_ms)
    quiet = run_fleet(fleet.with_plan(None), START_MS, end_ms)
    return evaluation, false_alerts_per_site_week(quiet, len(chosen), START_MS, end_ms)


KINDS = ("spike", "stuck", "drift", "dropout", "noise_burst", "out_of_range", "hypoxia",
         "frost", "irrigation_failure", "storm", "cold_water_intrusion")


@pytest.mark.parametrize("kind", [
    pytest.param(k, marks=pytest.mark.xfail(strict=False, reason="under target on the report seed"))
    if k in BELOW_TARGET else k for k in KINDS])
def test_each_kind_is_found_with_f1_of_at_least_0_9(scenario, kind):
    evaluation, _ = scenario
    score = next(k for k in evaluation.kinds if k.kind == kind)
    if score.labels < MIN_LABELS:
        pytest.skip(f"{score.labels} {kind} labels in this small scenario")
    assert not math.isnan(score.f1) and score.f1 >= TARGET_F1, (
        f"{kind}: P {score.precision:.2f} R {score.recall:.2f} over {score.labels} labels")


def test_faults_are_told_from_events(scenario):
    evaluation, _ = scenario
    assert evaluation.classified >= 30
    assert evaluation.classification >= 0.9


def test_a_fault_free_fleet_raises_at_most_one_alert_per_site_and_week(scenario):
    _, rate = scenario
    assert rate <= 1.0
