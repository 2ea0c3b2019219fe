"""A reading is a function of (seed, series, sample time): every way of asking agrees."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.testing as npt
import pytest

from tidefield.protocol.registry import load_sites
from tidefield.sim.fleet import Fleet
from tidefield.sim.scenario import scenario_plan, write_scenario

DAY = 86_400_000
HOUR = 3_600_000
APRIL = 1_743_465_600_000  # 2025-04-01T00:00Z
ONE_OF_EACH = ("ag-001", "ag-150", "ag-010", "ag-012", "ag-102", "oc-045", "oc-060",
               "oc-021", "oc-001", "oc-069", "oc-031")


def sites(ids=ONE_OF_EACH):
    return [s for s in load_sites() if s.id in ids]


@pytest.fixture(scope="module")
def injected() -> Fleet:
    plan = scenario_plan(APRIL, APRIL + 10 * DAY, faults_per_series=3.0, events_per_site=3.0)
    return Fleet(sites(), seed=7, plan=plan)


def assert_same_chunk(a, b):
    npt.assert_array_equal(a.series, b.series)
    npt.assert_array_equal(a.time_ms, b.time_ms)
    npt.assert_array_equal(a.value, b.value)  # exact, NaN never appears in a chunk


def test_chunk_is_in_time_order_with_ties_by_series(injected):
    chunk = injected.generate(APRIL, APRIL + 6 * HOUR)
    order = np.lexsort((chunk.series, chunk.time_ms))
    npt.assert_array_equal(order, np.arange(len(chunk)))
    assert chunk.time_ms.min() >= APRIL and chunk.time_ms.max() < APRIL + 6 * HOUR
    assert not np.isnan(chunk.value).any()


def test_chunked_generation_equals_one_shot(injected):
    start, end = APRIL + 17_321, APRIL + 2 * DAY + 5 * HOUR
    whole = injected.generate(start, end)
    cuts = [start, start + 7 * HOUR + 13 * 60_000 + 7_000, start + 7 * HOUR + 13 * 60_000 + 8_000,
            start + 31 * HOUR, end]
    parts = [injected.generate(a, b) for a, b in itertools.pairwise(cuts)]
    for name in ("series", "time_ms", "value"):
        npt.assert_array_equal(np.concatenate([getattr(p, name) for p in parts]),
                               getattr(whole, name))
    streamed = list(injected.chunks(start, end, chunk_ms=5 * HOUR + 17))
    assert sum(len(c) for c in streamed) == len(whole)
    npt.assert_array_equal(np.concatenate([c.value for c in streamed]), whole.value)


def test_a_fresh_fleet_and_a_warm_one_agree(injected):
    again = Fleet(sites(), seed=7, plan=injected.plan)
    window = (APRIL + 3 * DAY, APRIL + 3 * DAY + 4 * HOUR)
    assert_same_chunk(again.generate(*window), injected.generate(*window))
    assert again.labels(APRIL, APRIL + 10 * DAY) == injected.labels(APRIL, APRIL + 10 * DAY)


def test_value_at_and_series_values_match_generated_readings(injected):
    chunk = injected.generate(APRIL + DAY, APRIL + DAY + 2 * HOUR)
    rng = np.random.default_rng(5)
    for i in rng.choice(len(chunk), size=60, replace=False):
        s, t, v = int(chunk.series[i]), int(chunk.time_ms[i]), float(chunk.value[i])
        site, device, metric = injected.table.identity(s)
        interval = int(injected.table.arrays.interval_ms[s])
        assert injected.value_at(site, device, metric, t) == v
        assert injected.value_at(site, device, metric, t + interval - 1) == v  # held
        times, values = injected.series_values(s, t - 10 * interval, t + 1)
        assert times[-1] == t and values[-1] == v


def test_a_subset_of_sites_gives_the_same_values():
    window = (APRIL + 9 * HOUR, APRIL + 10 * HOUR)
    everyone = Fleet(seed=3).generate(*window)
    few = Fleet(seed=3).subset(["oc-021", "ag-010"])
    part = few.generate(*window)
    ids = np.array([f"{a}/{b}/{c}" for a, b, c in zip(
        everyone.table.site_ids, everyone.table.device_ids, everyone.table.metrics,
        strict=True)])
    keep = np.isin(ids[everyone.series], [f"{a}/{b}/{c}" for a, b, c in zip(
        few.table.site_ids, few.table.device_ids, few.table.metrics, strict=True)])
    npt.assert_array_equal(everyone.time_ms[keep], part.time_ms)
    npt.assert_array_equal(everyone.value[keep], part.value)
    assert len(everyone) == pytest.approx(2_658_816 / 24, rel=0.01)  # the whole fleet, 1 h


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    window = (APRIL, APRIL + DAY)
    made = {}
    for name, seed, fmt in (("a", 7, "csv"), ("b", 7, "csv"), ("c", 8, "csv"),
                            ("p1", 7, "parquet"), ("p2", 7, "parquet")):
        plan = scenario_plan(*window, faults_per_series=5.0, events_per_site=5.0)
        fleet = Fleet(sites(("ag-010", "oc-021", "oc-045")), seed=seed, plan=plan)
        summary = write_scenario(fleet, tmp_path / name, *window, fmt=fmt, chunk_ms=5 * HOUR)
        assert summary.readings > 0 and summary.labels > 0
        made[name] = {f: (tmp_path / name / f"{f}.{fmt}").read_bytes()
                      for f in ("readings", "labels")}
    assert made["a"] == made["b"]
    assert made["p1"] == made["p2"]
    assert made["a"]["readings"] != made["c"]["readings"]
    assert made["a"]["labels"] != made["c"]["labels"]
    assert made["a"]["readings"].startswith(b"site_id,device_id,metric,time,value\n")


def test_clean_signal_depends_on_the_seed_but_not_on_the_plan():
    window = (APRIL, APRIL + 3 * HOUR)
    clean7 = Fleet(sites(), seed=7).generate(*window)
    clean8 = Fleet(sites(), seed=8).generate(*window)
    assert not np.array_equal(clean7.value, clean8.value)
    npt.assert_array_equal(clean7.time_ms, clean8.time_ms)  # device clocks do not move


def test_a_subset_keeps_its_sites_injections(injected):
    few = injected.subset(["oc-021", "ag-010"])
    window = (APRIL, APRIL + 10 * DAY)
    mine = [lb for lb in injected.labels(*window) if lb.site_id in ("oc-021", "ag-010")]
    assert mine and few.labels(*window) == mine
    label = mine[len(mine) // 2]
    s_all = injected.table.index(label.site_id, label.device_id, label.metric)
    s_few = few.table.index(label.site_id, label.device_id, label.metric)
    npt.assert_array_equal(injected.series_values(s_all, label.start_ms, label.end_ms)[1],
                           few.series_values(s_few, label.start_ms, label.end_ms)[1])
