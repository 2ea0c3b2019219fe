"""`tidefield sim`: scenario files, the show command, arguments that are refused."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tidefield.sim.cli import app, parse_time_ms
from tidefield.sim.modbus import SOIL_PROBE, WATER_SONDE, generic_map, register_map_for

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_help_lists_the_commands():
    out = run("--help").output
    for command in ("scenario", "modbus", "show"):
        assert command in out


def test_scenario_writes_readings_labels_and_a_summary(tmp_path):
    result = run("scenario", "--days", "0.25", "--seed", "7", "--out", str(tmp_path),
                 "--site", "ag-010,oc-021", "--faults-per-series", "40", "--no-progress")
    assert result.exit_code == 0, result.output
    with (tmp_path / "readings.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["site_id", "device_id", "metric", "time", "value"]
    assert rows[0]["time"].endswith("Z") and rows[0]["time"].startswith("2025-04-01T00:0")
    assert {r["site_id"] for r in rows} == {"ag-010", "oc-021"}
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    with (tmp_path / "labels.csv").open() as f:
        labels = list(csv.DictReader(f))
    assert labels and list(labels[0]) == ["site_id", "device_id", "metric", "start", "end",
                                          "kind", "category", "event_id"]
    assert {lb["category"] for lb in labels} <= {"fault", "event"}
    meta = json.loads((tmp_path / "scenario.json").read_text())
    assert meta["readings"] == len(rows) and meta["labels"] == len(labels)
    assert meta["seed"] == 7 and meta["plan"]["anchor_ms"] == parse_time_ms("2025-04-01")


def test_scenario_without_injection_in_parquet(tmp_path):
    result = run("scenario", "--days", "0.1", "--out", str(tmp_path), "--format", "parquet",
                 "--no-inject", "--site", "oc-045", "--no-progress")
    assert result.exit_code == 0, result.output
    readings = pq.read_table(tmp_path / "readings.parquet")
    assert readings.column_names == ["site_id", "device_id", "metric", "time", "value"]
    assert str(readings.schema.field("time").type) == "timestamp[ms, tz=UTC]"
    assert readings.num_rows > 0
    assert pq.read_table(tmp_path / "labels.parquet").num_rows == 0


def test_bad_arguments_are_refused(tmp_path):
    assert runner.invoke(app, ["scenario", "--out", str(tmp_path), "--format", "xml"]
                         ).exit_code != 0
    assert runner.invoke(app, ["scenario", "--out", str(tmp_path), "--site", "nowhere"]
                         ).exit_code != 0
    assert runner.invoke(app, ["scenario", "--out", str(tmp_path), "--start", "yesterday"]
                         ).exit_code != 0


def test_show_prints_every_sensor(tmp_path):
    result = run("show", "--site", "oc-021", "--at", "2025-04-01T04:00:00Z", "--no-inject")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.strip().splitlines()]
    assert ["oc-021-sonde2", "dissolved_oxygen"] in [line[:2] for line in lines]
    assert all(float(line[2]) == float(line[2]) for line in lines)  # numbers, not NaN


def test_parse_time_accepts_dates_and_zones():
    assert parse_time_ms("2025-04-01") == 1_743_465_600_000
    assert parse_time_ms("2025-04-01T08:00:00+08:00") == 1_743_465_600_000
    assert parse_time_ms("2025-04-01T00:00:00Z") == 1_743_465_600_000


@pytest.mark.parametrize("register_map", [SOIL_PROBE, WATER_SONDE,
                                          generic_map("wx", ("air_temperature", "rainfall"))])
def test_register_maps_round_trip(register_map):
    values = {f.metric: 12.3 for f in register_map.fields}
    image = register_map.encode(values, unit_id=7)
    assert len(image) == register_map.size and all(0 <= w <= 0xFFFF for w in image)
    for metric, value in register_map.decode(image).items():
        assert value == pytest.approx(values[metric], rel=1e-6, abs=1e-3)


def test_soil_probe_encodes_negative_and_unreadable_values():
    image = SOIL_PROBE.encode({"soil_moisture": None, "soil_temperature": -2.5,
                               "soil_ec": 65535.0}, unit_id=1)
    assert image[:3] == [0xFFFF, 0xFFE7, 0xFFFF]
    assert register_map_for("soil", ()) is SOIL_PROBE
