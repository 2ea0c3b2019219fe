"""`tidefield detect benchmark`: the event-wise scoring by hand, the command on a small
committed synthetic fixture (tests/fixtures/benchmark, written by its make.py), and the
fixed split of the real datasets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tidefield.server.detect import benchmark as bm
from tidefield.server.detect.cli import app

from ..support.realdata import NAMES, realworld_or_skip

FIXTURE = Path(__file__).parents[1] / "fixtures" / "benchmark"
ROW = re.compile(r"^  ([\w*]+)\s+(\d+)\s+([\d.na]+)\s+([\d.na]+)\s+([\d.na]+)\s+([\d.na]+)")


def test_runs_join_alarms_closer_than_the_merge_distance():
    mask = np.zeros(40, bool)
    mask[[2, 3, 4, 9, 30]] = True
    assert bm.runs(mask) == [(2, 5), (9, 10), (30, 31)]
    assert bm.runs(mask, merge=10) == [(2, 10), (30, 31)]
    assert bm.runs(np.zeros(3, bool)) == []


def test_average_precision_by_hand():
    labels = np.array([1, 0, 1, 0], bool)
    assert bm.average_precision(np.array([4.0, 3, 2, 1]), labels) == pytest.approx(
        (1 / 1 + 2 / 3) / 2)
    assert bm.average_precision(np.array([1.0, 0, 1, 0]), labels) == 1.0
    # one tie over everything: precision is the base rate
    assert bm.average_precision(np.zeros(4), labels) == pytest.approx(0.5)


def test_event_wise_tally_by_hand():
    n = 200
    labels = np.zeros(n, bool)
    labels[50:60] = True  # event 1, found 3 rows late
    labels[120:121] = True  # event 2, missed
    alarm = np.zeros(n, bool)
    alarm[53] = True  # true
    alarm[62] = True  # after event 1, fewer than MERGE_ROWS rows on: one alarm with 53
    alarm[150:200] = True  # false, and already on when event 3 began: it does not find it
    labels[195:200] = True
    times = np.arange(n, dtype=np.int64) * 60_000
    tally = bm.Tally()
    bm.tally_series(tally, bm.Series("x", times, {"v": np.zeros(n)}, labels),
                    alarm.astype(float), alarm)
    assert (tally.events, tally.found, tally.alarms, tally.true_alarms) == (3, 1, 2, 1)
    assert tally.precision == 0.5 and tally.recall == pytest.approx(1 / 3)
    assert tally.f1 == pytest.approx(2 * 0.5 / 3 / (0.5 + 1 / 3))
    assert tally.delays_min == [3.0]
    normal_minutes = n - 1 - 11 - 2 - 5  # steps with a label-1 reading at either end
    assert tally.false_per_month == pytest.approx(1 / (normal_minutes * 60 / bm.MONTH_S))


def test_the_command_on_the_fixture_prints_each_detector_and_the_ratio():
    result = CliRunner().invoke(app, ["benchmark", str(FIXTURE / "creek"),
                                      str(FIXTURE / "rig")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "creek (report): 2 files, 2 series, 1,920 readings, 4 events" in out
    assert "rig (report): 1 files, 1 series, 1,200 readings, 1 events" in out
    rows = [ROW.match(line) for line in out.splitlines()]
    rows = [m.groups() for m in rows if m]
    assert [r[0] for r in rows] == ["tidefield", "zscore", "qartod", "hst", "zscore*",
                                    "qartod*", "hst*"] * 2
    tidefield_creek = rows[0]
    assert float(tidefield_creek[3]) == 1.0  # recall: the spike, stuck, missing and noise
    assert re.search(r"tidefield F1 / best baseline \((zscore|qartod|hst)\*? [\d.]+\): "
                     r"[\d.]+", out)
    assert "over 2 datasets, mean event-wise F1: tidefield" in out


def test_the_command_refuses_what_it_cannot_run(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["benchmark", str(FIXTURE / "creek"), "--detectors", "magic"])
    assert bad.exit_code == 2 and "unknown magic" in bad.stderr
    gone = runner.invoke(app, ["benchmark", str(tmp_path / "nothing")])
    assert gone.exit_code == 2 and "not a folder" in gone.stderr


def test_the_split_keeps_rows_shared_by_two_skab_files_on_one_side():
    skab = bm.DATASETS["skab_pump_testbed"]
    for a, b in (("other_02.csv", "other_03.csv"), ("other_10.csv", "other_11.csv"),
                 ("other_12.csv", "other_13.csv")):
        assert bm.part_of(skab, a) == bm.part_of(skab, b)
    assert bm.part_of(skab, "valve1_03.csv") == "tuning"
    assert bm.part_of(skab, "valve2_03.csv") == "report"
    # a file of a known dataset that the split does not name is for the report
    assert bm.part_of(bm.DATASETS["lro_aquatic_qc"], "NewSite_2021_ph.csv") == "report"


def test_each_real_dataset_has_both_parts_and_no_file_is_refused():
    root = realworld_or_skip()
    for name in NAMES:
        folder = root / name
        parts = {"tuning": 0, "report": 0}
        for dataset, path in bm.series_files(folder, "all"):
            series = bm.read_labelled(path, dataset.utc_offset_hours)
            assert series is not None, path
            assert series.labels.shape[0] == series.times_ms.shape[0] > 0
            parts[bm.part_of(dataset, path.name)] += 1
        assert parts["tuning"] > 0 and parts["report"] > 0, (name, parts)


def test_a_label_column_by_another_common_name_and_boolean_labels_are_read(tmp_path):
    rows = "".join(f"2025-04-01T00:{m:02d}:00,{m % 7},{'True' if 20 <= m < 23 else 'False'}\n"
                   for m in range(40))
    for name in ("is_anomaly", "anomaly", "label"):
        path = tmp_path / f"{name}.csv"
        path.write_text(f"timestamp,value,{name}\n{rows}")
        series = bm.read_labelled(path, 0.0)
        assert series is not None and list(series.columns) == ["value"]
        assert np.flatnonzero(series.labels).tolist() == [20, 21, 22]
    (tmp_path / "index.csv").write_text("timestamp,value\n2025-04-01T00:00:00,1\n")
    assert bm.read_labelled(tmp_path / "index.csv", 0.0) is None  # no labels: no series


def test_thinning_keeps_every_phase_and_each_reading_with_its_label():
    times = np.arange(7, dtype=np.int64) * 60_000
    values = np.arange(7, dtype=np.float64)
    series = bm.Series("x.csv", times, {"value": values}, values % 3 == 0)
    parts = bm.thinned(series, 3)
    assert [p.name for p in parts] == ["x.csv[0::3]", "x.csv[1::3]", "x.csv[2::3]"]
    assert [p.columns["value"].tolist() for p in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    assert [p.labels.tolist() for p in parts] == [[True, True, True], [False, False],
                                                   [False, False]]
    assert [p.times_ms.tolist() for p in parts][1] == [60_000, 240_000]
    assert bm.thinned(series, 1) == [series]
    with pytest.raises(ValueError):
        bm.thinned(series, 0)


def test_the_command_scores_a_sparser_logger_and_refuses_a_zero_step():
    runner = CliRunner()
    result = runner.invoke(app, ["benchmark", str(FIXTURE / "creek"), "--every", "2",
                                 "--detectors", "tidefield,zscore"])
    assert result.exit_code == 0, result.output
    # each file twice, the readings the same in all
    assert "creek (report, one row in 2): 2 files, 4 series, 1,920 readings" in result.stdout
    bad = runner.invoke(app, ["benchmark", str(FIXTURE / "creek"), "--every", "0"])
    assert bad.exit_code == 2
