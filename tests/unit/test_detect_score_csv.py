"""`tidefield detect score-csv` on files as real loggers write them: every quirk scored,
one output row per input row in input order; only an unreadable file is an error."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tidefield.server.detect.cli import app
from tidefield.server.detect.detector import repair_clock, score_values
from tidefield.server.detect.series_csv import SeriesCsvError, parse_zone, read_series

T0 = datetime(2025, 4, 1, tzinfo=UTC)
runner = CliRunner()


def _quirky_rows(rng: np.random.Generator) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Two and a half days of 15-minute water temperature (a daily swing and noise) written as a
    logger would: a repeated time, a clock set back an hour, a six-hour gap, blank, NaN
    and text cells, both sentinels, an unreadable time and a spike after the clock jump.
    Returns the rows and where the quirks are."""
    n = 240
    minutes = np.arange(n) * 15.0
    values = 12 + 2 * np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.03, n)
    times = [T0 + timedelta(minutes=float(m)) for m in minutes]
    cells = [f"{v:.2f}" for v in values]
    at = {"repeat": 60, "back": 100, "blank": 120, "nan": 121, "text": 122, "-9999": 123,
          "65535": 124, "bad_time": 125, "spike": 200, "gap": 150}
    times[at["repeat"]] = times[at["repeat"] - 1]
    for i in range(at["back"], n):  # the clock set back by an hour, for good
        times[i] -= timedelta(hours=1)
    for i in range(at["gap"], n):  # and six hours with no record
        times[i] += timedelta(hours=6)
    cells[at["blank"]] = ""
    cells[at["nan"]] = "NaN"
    cells[at["text"]] = "ERR"
    cells[at["-9999"]] = "-9999"
    cells[at["65535"]] = "65535"
    cells[at["spike"]] = f"{values[at['spike']] + 9:.2f}"
    stamps = [t.strftime("%Y-%m-%d %H:%M:%S") for t in times]
    stamps[at["bad_time"]] = "not a time"
    return list(zip(stamps, cells, strict=True)), at


def _write(path, rows, header=("timestamp", "value"), delimiter=","):
    with path.open("w", newline="") as out:
        writer = csv.writer(out, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def _run(*args) -> tuple[int, list[list[str]], str]:
    result = runner.invoke(app, ["score-csv", *map(str, args)])
    rows = list(csv.reader(io.StringIO(result.stdout)))
    return result.exit_code, rows, result.stderr


def test_every_quirk_is_scored_one_row_per_input_row_in_input_order(tmp_path):
    rows, at = _quirky_rows(np.random.default_rng(3))
    path = tmp_path / "logger.csv"
    _write(path, rows)
    code, out, err = _run(path)
    assert code == 0, err
    assert out[0] == ["timestamp", "value", "anomaly_score", "component", "category",
                      "qartod_flag", "qartod_test"]
    body = out[1:]
    assert [(r[0], r[1]) for r in body] == rows  # count and order, cells as written
    scores = np.array([float(r[2]) for r in body])
    components = [r[3] for r in body]
    for quirk in ("blank", "nan", "text", "-9999", "65535"):  # a missing reading
        assert components[at[quirk]] == "range" and scores[at[quirk]] == 1.0, quirk
        assert body[at[quirk]][5:] == ["9", "missing_value"]
    assert body[at["spike"]][5:] in (["3", "spike_test"], ["4", "spike_test"])
    # readings after the clock went back are scored: the spike among them is found
    assert components[at["spike"]] == "spike" and scores[at["spike"]] >= 0.5
    assert components[at["gap"]] == "gap"
    calm = np.ones(len(rows), bool)
    calm[[*at.values(), at["spike"] + 1]] = False
    assert (scores[calm][20:] < 0.5).mean() > 0.95
    # the unreadable time took the one before it: a second repeated time
    assert "2 repeated times" in err and "1 backward time steps" in err
    assert "1 unreadable times" in err
    assert "2 no-data sentinels" in err and "3 blank or text values" in err


def test_named_columns_another_delimiter_and_a_time_zone(tmp_path):
    rows, _ = _quirky_rows(np.random.default_rng(4))
    wide = [(f"{i}", "7.0", stamp, cell) for i, (stamp, cell) in enumerate(rows)]
    path = tmp_path / "wide.csv"
    _write(path, wide, header=("id", "other", "Zeit", "Temp"), delimiter=";")
    code, out, err = _run(path, "--time-column", "Zeit", "--value-column", "temp",
                          "--tz", "+10:00")
    assert code == 0, err
    assert [(r[0], r[1]) for r in out[1:]] == rows
    by_number = _run(path, "--time-column", "3", "--value-column", "4")[1]
    assert [r[2] for r in by_number] == [r[2] for r in out]  # a zone moves no score
    table = read_series(path, time_column="Zeit", value_column="Temp",
                        zone=parse_zone("Australia/Brisbane"))
    first = datetime.strptime(rows[0][0], "%Y-%m-%d %H:%M:%S")
    assert table.times_ms[0] == int((first - timedelta(hours=10)).replace(
        tzinfo=UTC).timestamp() * 1000)


def test_other_time_forms_are_read():
    text = ("time,value\n1743465600,1\n1743465660000,2\n2025-04-01T00:02:00+08:00,3\n"
            "2025-04-01 00:03:00Z,4\n\n2025-04-01T00:04:00,5\n")
    table = read_series(io.StringIO(text))
    assert len(table) == 5  # the empty line is no record
    assert table.times_ms.tolist() == [1_743_465_600_000, 1_743_465_660_000,
                                       1_743_465_600_000 - 8 * 3_600_000 + 120_000,
                                       1_743_465_780_000, 1_743_465_840_000]
    custom = read_series(io.StringIO("timestamp,value\n12/03/2017 1:30,2\n"),
                         time_format="%d/%m/%Y %H:%M")
    assert custom.times_ms[0] == int(datetime(2017, 3, 12, 1, 30, tzinfo=UTC).timestamp()
                                     * 1000)


@pytest.mark.parametrize(("content", "args", "says"), [
    (None, (), "cannot read"),
    (b"", (), "no header"),
    (b"timestamp,value\n", (), "row 2: no data rows"),
    (b"timestamp,value\nyesterday,1\nlater,2\n", (), "row 2: no readable time"),
    (b"timestamp,value\n2025-04-01,1\n", ("--value-column", "ph"), "row 1: no value column"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00", (), "not a text file"),
])
def test_a_file_that_cannot_be_read_is_one_line_naming_file_row_and_what(tmp_path, content,
                                                                          args, says):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    code, out, err = _run(path, *args)
    assert code == 2 and out == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and says in lines[0]


def test_bad_options_are_one_line_errors(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("timestamp,value\n2025-04-01,1\n")
    for args, says in ((("--tz", "Mars/Olympus"),), "unknown zone"), \
                      ((("--metric", "nope"),), "unknown metric"):
        code, _, err = _run(path, *args[0])
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_the_clock_repair_keeps_order_and_makes_times_increase():
    t = np.array([0, 60_000, 60_000, 120_000, 60_000, 120_000, 500_000], dtype=np.int64)
    fixed = repair_clock(t, 60_000.0)
    assert (np.diff(fixed) > 0).all()
    # a repeat is a millisecond on; a step back shifts the rest to one interval on
    assert fixed.tolist() == [0, 60_000, 60_001, 120_000, 180_000, 240_000, 620_000]
    assert repair_clock(np.arange(5) * 10, 10.0).tolist() == [0, 10, 20, 30, 40]


def test_score_values_takes_unordered_times_and_sentinels_as_missing():
    t = np.array([3, 1, 2, 2], dtype=np.int64) * 60_000
    scores = score_values(t, np.array([1.0, -9999.0, 65535.0, 1.0]))
    assert scores.score.shape == (4,)
    assert scores.component_names().tolist()[1:3] == ["range", "range"]


def _ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_a_file_without_a_header_keeps_its_first_row(tmp_path):
    path = tmp_path / "bare.csv"
    path.write_text("2025-04-01T00:00:00Z,1.0\n2025-04-01T00:01:00Z,1.1\n"
                    "2025-04-01T00:02:00Z,1.2\n")
    code, out, err = _run(path)
    assert code == 0, err
    assert [r[:2] for r in out[1:]] == [["2025-04-01T00:00:00Z", "1.0"],
                                        ["2025-04-01T00:01:00Z", "1.1"],
                                        ["2025-04-01T00:02:00Z", "1.2"]]
    assert _run(path, "--value-column", "2")[1] == out  # columns by number


@pytest.mark.parametrize(("stamps", "form", "first_ms", "step_ms"), [
    # ambiguous cells: the form whose steps are regular wins, whichever it is
    ([f"{d:02d}/02/2024 06:00" for d in range(1, 13)], "%d/%m/%Y %H:%M",
     _ms(2024, 2, 1, 6), 86_400_000),
    ([f"02/{d:02d}/2024 06:00" for d in range(1, 13)], "%m/%d/%Y %H:%M",
     _ms(2024, 2, 1, 6), 86_400_000),
    ([f"02/13/2024 {h}:30 PM" for h in (1, 2, 3)], "%m/%d/%Y %I:%M %p",
     _ms(2024, 2, 13, 13, 30), 3_600_000),
    ([f"13.02.2024 0{h}:00" for h in (1, 2, 3)], "%d.%m.%Y %H:%M",
     _ms(2024, 2, 13, 1), 3_600_000),
])
def test_local_time_forms_are_inferred(stamps, form, first_ms, step_ms):
    text = "timestamp,value\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps))
    table = read_series(io.StringIO(text))
    assert table.time_format == form and table.bad_times == 0
    assert table.times_ms[0] == first_ms
    assert set(np.diff(table.times_ms).tolist()) == {step_ms}
    assert form in table.summary()


def test_european_export_with_decimal_commas_and_a_split_date_and_time(tmp_path):
    path = tmp_path / "logger.csv"
    path.write_text("Zeitstempel;Temperatur °C\n13.02.2024 10:00;1,5\n13.02.2024 10:15;1,75\n"
                    "13.02.2024 10:30;-9999\n", encoding="latin-1")
    code, out, err = _run(path)
    assert code == 0, err
    assert [r[:2] for r in out[1:]] == [["13.02.2024 10:00", "1,5"], ["13.02.2024 10:15", "1,75"],
                                        ["13.02.2024 10:30", "-9999"]]
    table = read_series(path)
    assert table.values[:2].tolist() == [1.5, 1.75] and np.isnan(table.values[2])
    assert table.times_ms[1] - table.times_ms[0] == 900_000
    split = tmp_path / "split.csv"
    split.write_text("date,time,value\n2024-02-13,10:00:00,1\n2024-02-13,10:15:00,2\n")
    table = read_series(split)
    assert table.stamps == ["2024-02-13 10:00:00", "2024-02-13 10:15:00"]
    assert table.times_ms.tolist() == [_ms(2024, 2, 13, 10), _ms(2024, 2, 13, 10, 15)]
    # a comma-delimited file's commas stay delimiters: "1,5" there is two cells
    assert read_series(io.StringIO("timestamp,value\n2024-02-13,\"1,5\"\n")).text_values == 1


def test_a_file_of_values_alone_is_scored_row_for_row(tmp_path):
    for text, cells in (("level\n1.0\n1.1\n\n-9999\n1.2\n", ["1.0", "1.1", "-9999", "1.2"]),
                        ("5\n6\n7\n", ["5", "6", "7"])):  # with a header, and without
        path = tmp_path / "column.csv"
        path.write_text(text)
        code, out, err = _run(path, "--interval-s", "900")
        assert code == 0, err
        assert [r[1] for r in out[1:]] == cells
        assert "900 s apart" in err
    table = read_series(io.StringIO("level\n1\n2\n3\n"), spacing_s=900)
    assert np.diff(table.times_ms).tolist() == [900_000, 900_000]


_CELLS = st.one_of(st.sampled_from(["", "NaN", "-9999", "65535", "1,5", "ERR", "13.02.2024 10:00",
                                    "02/13/2024 1:30 PM", "2025-04-01T00:00:00Z", "1743465600",
                                    "timestamp", "value", "inf", '"', "\ufeff"]),
                   st.floats(allow_nan=True).map(str), st.text(max_size=8))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_CELLS, min_size=1, max_size=4), max_size=12),
       st.sampled_from([",", ";", "\t"]))
def test_any_text_is_a_table_row_for_row_or_one_clear_error(rows, delimiter):
    text = "\n".join(delimiter.join(row) for row in rows)
    try:
        table = read_series(io.StringIO(text))
    except SeriesCsvError as exc:
        assert "\n" not in str(exc)
        return
    n = len(table)
    assert n >= 1 and len(table.cells) == n == len(table.times_ms) == len(table.values)
    assert table.times_ms.dtype == np.int64 and table.summary() is not None
