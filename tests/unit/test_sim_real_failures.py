"""firmware-sim fails like real sensors: biofouling ended by a cleaning's step back,
maintenance pulls, battery sag, a logger's sentinel, each labelled as the kind it looks
like; and a logger's irregular times, repeated timestamps and clock jumps."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.registry import load_sites
from tidefield.sim import render as rd
from tidefield.sim.fleet import Fleet
from tidefield.sim.logger import LoggerQuirks
from tidefield.sim.scenario import scenario_plan

DAY = 86_400_000
APRIL = 1_743_465_600_000
START, END = APRIL, APRIL + 20 * DAY
OCEAN = ("oc-021", "oc-022", "oc-045", "oc-060", "oc-069", "oc-001", "oc-030", "oc-040")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    plan = scenario_plan(START, END, faults_per_series=4.0, events_per_site=0.0)
    return Fleet([s for s in load_sites() if s.id in OCEAN], seed=31, plan=plan)


def _shapes(fleet: Fleet):
    """(series, shape name, start, end, value) of every injected fault."""
    out = []
    for site in fleet.table.sites:
        for epoch in range(fleet.plan.epoch_of(START), fleet.plan.epoch_of(END - 1) + 1):
            for s, rows in fleet.site_plan(site.id, epoch).faults.items():
                out.extend((s, rd.SHAPES[int(r[rd.F_KIND])], int(r[rd.F_START]),
                            int(r[rd.F_END]), float(r[rd.F_VALUE])) for r in rows)
    return out


def _series(fleet: Fleet, s: int, start: int, end: int):
    chunk = fleet.generate(start, end)
    mine = chunk.series == s
    return chunk.time_ms[mine], chunk.value[mine]


def test_real_failure_shapes_are_planned_and_labelled_as_what_they_look_like(fleet):
    shapes = _shapes(fleet)
    seen = Counter(name for _, name, *_ in shapes)
    assert {"fouling", "pull_flat", "pull_jumping", "battery_sag"} <= set(seen)
    labels = {(lb.device_id, lb.metric, lb.start_ms): lb.kind for lb in fleet.labels(START, END)}
    for s, name, start, _, _ in shapes:
        _, device, metric = fleet.table.site_ids[s], fleet.table.device_ids[s], \
            fleet.table.metrics[s]
        assert labels[(device, metric, start)] == rd.LABEL_KIND[rd.SHAPES.index(name)]
        if name == "fouling":
            assert metric in ("turbidity", "dissolved_oxygen", "chlorophyll_a")


def test_fouling_grows_its_way_and_a_cleaning_steps_it_back(fleet):
    clean = fleet.with_plan(None)
    for s, name, start, end, value in _shapes(fleet):
        if name != "fouling":
            continue
        t, fouled = _series(fleet, s, start, end + 3_600_000)
        _, plain = _series(clean, s, start, end + 3_600_000)
        off = fouled - plain
        inside = t < end
        metric = fleet.table.metrics[s]
        sign = -1.0 if metric == "dissolved_oxygen" else 1.0
        assert sign * value > 0
        late = inside & (t >= start + 0.8 * (end - start))
        assert sign * np.median(off[late]) > 0.4 * abs(value)  # most of it by the end
        assert np.allclose(off[~inside], 0.0)  # cleaned: back at once
        return
    pytest.fail("no fouling planned")


def test_a_maintenance_pull_reads_the_air(fleet):
    checked = set()
    for s, name, start, end, value in _shapes(fleet):
        if name not in ("pull_flat", "pull_jumping") or name in checked:
            continue
        _, v = _series(fleet, s, start, end)
        resolution = METRICS[fleet.table.metrics[s]].resolution
        at_air = np.isclose(v, value, atol=resolution)
        if name == "pull_flat":
            assert at_air.all()
        else:  # in and out of the water: some readings each
            assert 0.2 < at_air.mean() < 0.8
        checked.add(name)
    assert checked == {"pull_flat", "pull_jumping"}


def test_logger_quirks_move_only_times_and_are_deterministic(fleet):
    chunk = fleet.with_plan(None).generate(START, START + 24 * 3_600_000)  # no dropouts
    quirks = LoggerQuirks(seed=31, jumps_per_series_month=30.0)  # many jumps, to see them
    once, again = quirks.apply(chunk), quirks.apply(chunk)
    np.testing.assert_array_equal(once.time_ms, again.time_ms)
    assert len(once) > len(chunk)  # some readings sent twice
    interval = chunk.table.arrays.interval_ms
    stepped_back = repeated = 0
    for s in np.unique(chunk.series):
        mine = once.series == s
        t, v = once.time_ms[mine], once.value[mine]
        original = chunk.value[chunk.series == s]
        assert set(np.unique(v[~np.isnan(v)])) <= set(np.unique(original))
        steps = np.diff(t)
        repeated += int((steps == 0).sum())
        stepped_back += int((steps < 0).sum())
        # a jump forward at most 1 + 1.5 + 2 x 0.2 intervals: short of a no-data silence
        assert np.abs(np.diff(t)).max() <= 2.9 * interval[s] + 1
    assert repeated > 0 and stepped_back > 0
