"""Injected faults and events: labelled, visible inside their interval, absent outside."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import Batch
from tidefield.protocol.registry import load_sites
from tidefield.sim.events import EVENT_KINDS, InjectionPlan
from tidefield.sim.fleet import Fleet
from tidefield.sim.render import FAULT_KINDS
from tidefield.sim.scenario import scenario_plan

DAY = 86_400_000
HOUR = 3_600_000
APRIL = 1_743_465_600_000  # 2025-04-01T00:00Z: frosts, irrigation and upwelling all possible
START, END = APRIL, APRIL + 20 * DAY
SITE_IDS = ("ag-001", "ag-002", "ag-045", "ag-150", "ag-010", "ag-102", "oc-021", "oc-022",
            "oc-045", "oc-060", "oc-069", "oc-001")


@pytest.fixture(scope="module")
def fleets() -> tuple[Fleet, Fleet]:
    plan = scenario_plan(START, END, faults_per_series=3.0, events_per_site=4.0)
    injected = Fleet([s for s in load_sites() if s.id in SITE_IDS], seed=21, plan=plan)
    return injected, injected.with_plan(None)


@pytest.fixture(scope="module")
def readings(fleets):
    """{series: (times, values)} of the injected and the clean window."""
    def by_series(chunk):
        order = np.argsort(chunk.series, kind="stable")
        series, times, values = chunk.series[order], chunk.time_ms[order], chunk.value[order]
        cuts = np.flatnonzero(np.diff(series)) + 1
        return {int(s[0]): (t, v) for s, t, v in zip(np.split(series, cuts),
                                                     np.split(times, cuts),
                                                     np.split(values, cuts), strict=True)}

    injected, clean = fleets
    return by_series(injected.generate(START, END)), by_series(clean.generate(START, END))


@pytest.fixture(scope="module")
def labels(fleets):
    return fleets[0].labels(START, END)


def test_every_kind_is_planned_and_labelled(labels):
    kinds = Counter(label.kind for label in labels)
    assert set(FAULT_KINDS) <= set(kinds)
    assert set(EVENT_KINDS) <= set(kinds)
    for label in labels:
        assert label.category == ("event" if label.kind in EVENT_KINDS else "fault")
        assert START <= label.start_ms < label.end_ms <= END


def test_labels_never_overlap_on_a_series(labels):
    per_series = defaultdict(list)
    for label in labels:
        per_series[(label.device_id, label.metric)].append((label.start_ms, label.end_ms))
    for intervals in per_series.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start


def test_each_label_really_differs_from_the_clean_signal(fleets, readings, labels):
    injected, _ = fleets
    dirty, clean = readings
    for label in labels:
        s = injected.table.index(label.site_id, label.device_id, label.metric)
        t_clean, v_clean = clean[s]
        inside = (t_clean >= label.start_ms) & (t_clean < label.end_ms)
        assert inside.any(), label
        t_dirty, v_dirty = dirty.get(s, (np.zeros(0, np.int64), np.zeros(0)))
        got = dict(zip(t_dirty.tolist(), v_dirty.tolist(), strict=True))
        if label.kind == "dropout":
            assert not any(t in got for t in t_clean[inside].tolist()), label
            continue
        moved = [abs(got[t] - v) for t, v in zip(t_clean[inside].tolist(),
                                                 v_clean[inside].tolist(), strict=True)]
        assert max(moved) >= METRICS[label.metric].resolution * 0.999, label


def test_outside_its_labels_a_series_is_exactly_clean(fleets, readings, labels):
    injected, _ = fleets
    dirty, clean = readings
    covered = defaultdict(list)
    for label in labels:
        covered[injected.table.index(label.site_id, label.device_id, label.metric)].append(
            (label.start_ms, label.end_ms))
    for s, (t_clean, v_clean) in clean.items():
        t_dirty, v_dirty = dirty[s]
        keep_clean = np.ones(t_clean.shape, bool)
        keep_dirty = np.ones(t_dirty.shape, bool)
        for start, end in covered.get(s, []):
            keep_clean &= ~((t_clean >= start) & (t_clean < end))
            keep_dirty &= ~((t_dirty >= start) & (t_dirty < end))
        np.testing.assert_array_equal(t_dirty[keep_dirty], t_clean[keep_clean])
        np.testing.assert_array_equal(v_dirty[keep_dirty], v_clean[keep_clean])


def test_real_events_move_every_sensor_they_should(labels, fleets):
    injected, _ = fleets
    by_event = defaultdict(set)
    for label in labels:
        if label.category == "event":
            by_event[(label.kind, label.event_id)].add((label.device_id, label.metric))
    kinds = {kind for kind, _ in by_event}
    assert kinds == set(EVENT_KINDS)
    expected = {
        "storm": {"wind_speed", "air_pressure", "wave_height", "tide_level", "turbidity"},
        "frost": {"air_temperature", "air_humidity", "leaf_wetness"},
        "irrigation_failure": {"soil_moisture", "soil_ec"},
        "cold_water_intrusion": {"water_temperature", "dissolved_oxygen"},
    }
    for (kind, event_id), moved in by_event.items():
        site = event_id.split("-", 1)[1].rsplit("-", 2)[0]
        carried = {injected.table.metrics[s] for s in injected.table.of_site(site)}
        if kind == "hypoxia":
            assert {(f"{site}-sonde", "dissolved_oxygen"),
                    (f"{site}-sonde2", "dissolved_oxygen"), (f"{site}-sonde", "water_ph")} <= moved
        else:
            assert expected[kind] & carried <= {m for _, m in moved}, (kind, site)


def test_hypoxia_falls_below_3_mg_per_litre_on_both_sondes(labels, readings, fleets):
    injected, _ = fleets
    dirty, _ = readings
    hypoxic = [lb for lb in labels if lb.kind == "hypoxia" and lb.metric == "dissolved_oxygen"]
    assert len({lb.device_id for lb in hypoxic}) >= 2
    for label in hypoxic:
        t, v = dirty[injected.table.index(label.site_id, label.device_id, label.metric)]
        assert v[(t >= label.start_ms) & (t < label.end_ms)].min() < 3.0


def test_frost_freezes_the_orchard(labels, readings, fleets):
    injected, _ = fleets
    dirty, _ = readings
    frosts = [lb for lb in labels if lb.kind == "frost" and lb.metric == "air_temperature"]
    assert frosts
    for label in frosts:
        t, v = dirty[injected.table.index(label.site_id, label.device_id, label.metric)]
        assert v[(t >= label.start_ms) & (t < label.end_ms)].min() < -1.0


def test_only_out_of_range_faults_leave_the_physical_range(labels, readings, fleets):
    injected, _ = fleets
    dirty, _ = readings
    garbage = set()
    for label in labels:
        if label.kind == "out_of_range":
            s = injected.table.index(label.site_id, label.device_id, label.metric)
            t, v = dirty[s]
            inside = v[(t >= label.start_ms) & (t < label.end_ms)]
            assert not any(METRICS[label.metric].in_physical_range(x) for x in inside)
            garbage.add(s)
    for s, (_, v) in dirty.items():
        if s not in garbage:
            low, high = METRICS[injected.table.metrics[s]].physical
            assert v.min() >= low and v.max() <= high


def test_default_plan_epochs_keep_labels_inside_them():
    plan = InjectionPlan(faults_per_series=2.0, events_per_site=2.0)
    fleet = Fleet([s for s in load_sites() if s.id in ("oc-021", "ag-010")], seed=4, plan=plan)
    start = plan.epoch_bounds(plan.epoch_of(APRIL))[0]
    for label in fleet.labels(start, start + 60 * DAY):
        epoch = plan.epoch_of(label.start_ms)
        assert plan.epoch_bounds(epoch)[0] <= label.start_ms < label.end_ms <= \
            plan.epoch_bounds(epoch)[1]


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="unknown fault kinds"):
        InjectionPlan(fault_kinds=("melted",))
    with pytest.raises(ValueError, match="unknown event kinds"):
        InjectionPlan(event_kinds=("tsunami",))


def test_batches_carry_the_generated_readings_with_caller_sequence_numbers(fleets):
    injected, _ = fleets
    start, end = APRIL + 2 * DAY, APRIL + 2 * DAY + 10 * 60_000
    chunk = injected.generate(start, end)
    seq = defaultdict(lambda: 100)

    def next_seq(device_id: str) -> int:
        seq[device_id] += 1
        return seq[device_id]

    batches = list(injected.batches(start, end, next_seq, max_readings=7))
    assert all(isinstance(b, Batch) for b in batches)
    assert sum(len(b.readings) for b in batches) == len(chunk)
    assert all(len(b.readings) <= 7 for b in batches)
    for device_id in {b.device for b in batches}:
        mine = [b for b in batches if b.device == device_id]
        assert [b.seq for b in mine] == list(range(101, 101 + len(mine)))
        times = [r.time_ms for b in mine for r in b.readings]
        assert times == sorted(times)
    device = batches[0].device
    one = injected.device_batch(device, start, end, seq=5)
    assert one.seq == 5 and one.site == batches[0].site
    assert one.readings == tuple(r for b in batches if b.device == device for r in b.readings)


def test_hypoxia_frost_and_storms_start_with_precursors_and_carry_their_crossing(
        labels, readings, fleets):
    """An event's label begins with the weather that leads up to it and carries the first
    instant past its alert threshold, which its primary series really shows then and not
    before; a hypoxia or frost crosses hours after its label begins."""
    injected, _ = fleets
    dirty, _ = readings
    limits = {"hypoxia": ("dissolved_oxygen", lambda v: v < 3.0),
              "frost": ("air_temperature", lambda v: v < -1.0),
              "storm": ("wind_speed", lambda v: v > 13.9)}
    by_event = defaultdict(list)
    for label in labels:
        if label.kind in limits:
            by_event[label.event_id].append(label)
        if label.category == "fault" or label.kind == "irrigation_failure":
            assert label.crossing_ms is None
    leads = defaultdict(list)
    for members in by_event.values():
        kind = members[0].kind
        crossing = members[0].crossing_ms
        assert all(m.crossing_ms == crossing for m in members)
        if crossing is None:
            assert kind == "storm"  # a sheltered site's storm may stay under a gale
            continue
        assert members[0].start_ms <= crossing < members[0].end_ms
        metric, past = limits[kind]
        first = []
        for m in members:
            if m.metric != metric:
                continue
            times, values = dirty[injected.table.index(m.site_id, m.device_id, m.metric)]
            inside = (times >= m.start_ms) & (times < m.end_ms) & past(values)
            first.append(int(times[inside][0]) if inside.any() else None)
        assert min(t for t in first if t is not None) == crossing
        leads[kind].append((crossing - members[0].start_ms) / HOUR)
    assert leads["hypoxia"] and leads["frost"]
    assert min(leads["hypoxia"]) >= 4.0 and min(leads["frost"]) >= 3.0, leads
