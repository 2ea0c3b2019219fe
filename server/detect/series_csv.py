"""Reading a real sensor CSV for scoring: every data row is kept, in input order.

Real loggers write repeated and backward times, gaps, blank, ``NaN`` and text cells and
no-data sentinels (-9999, 65535). None of them stops a file: a row whose value cannot be
read is a missing reading (scored as such), a row whose time cannot be read takes the
time before it (a repeated time), and ``detector.score_values`` repairs the clock. Only a
file that cannot be read at all (no such file, not text, nothing in it, a named column
that is not there, no row with a readable time) raises ``SeriesCsvError`` with one line
that names the file, the row and what is wrong.

Exports are read as spreadsheets and loggers write them: a file may have no header (its
first record is data when it reads as a time and a number), times in a local form
(``13/02/2024 10:05``, ``02/13/2024 10:05 PM``, ``13.02.2024 10:05``: the form is
inferred from the cells, see ``infer_time_format``), the date and the time of day in two
columns (``date``, ``time``), and decimal commas where the delimiter is not a comma.

Invariant: ``SeriesTable`` has exactly one entry per non-empty data record of the file,
in the file's order (an empty line is no record).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from .detector import SENTINELS

TIME_NAMES = ("timestamp", "time", "datetime", "date_time", "date", "phenomenontime")
VALUE_NAMES = ("value", "result", "reading")
EPOCH_SECONDS_BELOW = 100_000_000_000  # an integer under this is epoch seconds, else ms
NO_TIME = np.iinfo(np.int64).min
# Local time forms of spreadsheets and loggers, tried when ISO-8601 and epoch numbers read
# under half of a file's time cells. Where several read them all (01/02/2024 is the 1st of
# February or the 2nd of January), the one whose steps are the most regular wins.
TIME_FORMATS = tuple(
    f"{date}{clock}"
    for date in ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y-%m-%d",
                 "%d/%m/%y", "%m/%d/%y", "%Y%m%d")
    for clock in (" %H:%M:%S", " %H:%M", " %H:%M:%S.%f", " %I:%M:%S %p", " %I:%M %p", ""))
INFER_SAMPLE = 500  # time cells looked at to infer the form
_BOOLEANS = {"true": 1.0, "false": 0.0}


class SeriesCsvError(ValueError):
    """A file that cannot be read at all; the message is one line: file, row, what."""

    def __init__(self, source: str, row: int | None, what: str) -> None:
        where = f"{source}: row {row}" if row is not None else source
        super().__init__(f"{where}: {what}")
        self.source, self.row, self.what = source, row, what


@dataclass
class SeriesTable:
    """One scored column of a CSV, row for row."""

    stamps: list[str]  # the time cells as written
    cells: list[str]  # the value cells as written
    times_ms: np.ndarray  # int64; a row whose time could not be read has the one before
    values: np.ndarray  # float64; NaN for a blank, text or sentinel cell
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other numeric columns
    bad_times: int = 0
    text_values: int = 0
    sentinels: int = 0
    time_format: str | None = None  # the local time form inferred, if any
    spacing_s: float | None = None  # a file without times: its rows taken this far apart

    def __len__(self) -> int:
        return len(self.stamps)

    def summary(self) -> str:
        """What was unusual about the file, for a note on stderr ('' when nothing)."""
        steps = np.diff(self.times_ms)
        notes = []
        for count, what in ((int((steps == 0).sum()), "repeated times"),
                            (int((steps < 0).sum()), "backward time steps"),
                            (self.bad_times, "unreadable times (the row before's taken)"),
                            (self.text_values, "blank or text values"),
                            (self.sentinels, "no-data sentinels")):
            if count:
                notes.append(f"{count} {what}")
        if self.time_format is not None:
            notes.append(f"times read as {self.time_format!r}")
        if self.spacing_s is not None:
            notes.append(f"no time column: rows taken {self.spacing_s:g} s apart")
        return ", ".join(notes)


def parse_zone(text: str | None) -> tzinfo:
    """``UTC``, a fixed offset (``+10:00``, ``-7``) or an IANA name (``Australia/Brisbane``);
    ValueError names what was given."""
    if text is None or text.strip().upper() in ("", "UTC", "Z"):
        return UTC
    text = text.strip()
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        hours, _, minutes = text[1:].partition(":")
        try:
            offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        except ValueError:
            raise ValueError(f"time zone {text!r}: expected +HH:MM, -HH or a zone name") from None
        if offset > timedelta(hours=14):
            raise ValueError(f"time zone {text!r}: an offset is at most 14 hours")
        return timezone(sign * offset)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {text!r}: unknown zone name") from None


def parse_time_ms(text: str, zone: tzinfo = UTC, time_format: str | None = None) -> int | None:
    """Epoch ms of a time cell (ISO-8601 with or without a zone, epoch seconds or ms, or
    ``time_format`` for strptime); a time without a zone is in ``zone``. None when the
    cell cannot be read."""
    text = text.strip()
    if not text:
        return None
    try:
        if time_format is not None:
            moment = datetime.strptime(text, time_format)
        elif text.lstrip("-").replace(".", "", 1).isdigit():
            number = float(text)
            if not math.isfinite(number):
                return None
            return int(number * 1000) if abs(number) < EPOCH_SECONDS_BELOW else int(number)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return int(moment.timestamp() * 1000)


def parse_value(text: str, decimal_comma: bool = False) -> tuple[float, str]:
    """The reading of a value cell and what it was: ``ok``, ``text`` (blank, NaN-like or
    unreadable: a missing reading) or ``sentinel``. ``decimal_comma``: ``1,5`` is 1.5 (a
    file delimited otherwise than by commas, as European spreadsheets write)."""
    text = text.strip()
    if decimal_comma and text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    try:
        value = float(text)
    except ValueError:
        # a spreadsheet's or pandas' booleans (a pump state, a label) are 1 and 0
        truth = _BOOLEANS.get(text.lower())
        return (math.nan, "text") if truth is None else (truth, "ok")
    if not math.isfinite(value):
        return math.nan, "text" if math.isnan(value) else "ok"  # inf stays: out of range
    if value in SENTINELS:
        return math.nan, "sentinel"
    return value, "ok"


def infer_time_format(cells: list[str], zone: tzinfo = UTC) -> str | None:
    """The strptime form of a file's time cells when ISO-8601 and epoch numbers do not read
    at least half of them (None: they do, or no form reads more). Among the forms that
    read the most cells, the one whose times step forward most often, then by the smallest
    typical step, is taken: a logger's day-first 01/02, 02/02, 03/02 are a day apart, read
    month-first a month."""
    sample = [c for c in (cell.strip() for cell in cells) if c][:INFER_SAMPLE]
    if not sample:
        return None
    generic = sum(parse_time_ms(c, zone) is not None for c in sample)
    if 2 * generic >= len(sample):
        return None
    best: tuple[int, float, float] | None = None
    chosen = None
    for form in TIME_FORMATS:
        parsed = [parse_time_ms(c, zone, form) for c in sample]
        times = np.array([t for t in parsed if t is not None], dtype=np.int64)
        if len(times) <= generic:
            continue
        steps = np.diff(times)
        forward = float((steps >= 0).mean()) if len(steps) else 1.0
        typical = float(np.median(np.abs(steps))) if len(steps) else 0.0
        rank = (len(times), forward, -typical)
        if best is None or rank > best:
            best, chosen = rank, form
    return chosen


def _looks_like_data(record: list[str], zone: tzinfo) -> bool:
    """A first record that is data, not a header: its first cell a time (in any form read
    here) and its second a number; in a file of one column, a number."""
    if len(record) == 1:
        return parse_value(record[0], decimal_comma=True)[1] == "ok"
    if parse_value(record[1], decimal_comma=True)[1] != "ok":
        return False
    cell = record[0].strip()
    return (parse_time_ms(cell, zone) is not None
            or any(parse_time_ms(cell, zone, form) is not None for form in TIME_FORMATS))


def _column(header: list[str], wanted: str | None, names: tuple[str, ...], default: int,
            source: str, role: str) -> int:
    folded = [h.strip().lower() for h in header]
    if wanted is None:
        for name in names:
            if name in folded:
                return folded.index(name)
        if default >= len(header):
            raise SeriesCsvError(source, 1, f"the header has no {role} column")
        return default
    if wanted.strip().lower() in folded:
        return folded.index(wanted.strip().lower())
    if wanted.isdigit() and 1 <= int(wanted) <= len(header):
        return int(wanted) - 1
    raise SeriesCsvError(source, 1, f"no {role} column {wanted!r} (the header has "
                                    f"{', '.join(h.strip() for h in header)})")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # an old logger's export; every byte is a character


def read_series(source: Path | str | io.TextIOBase, *, time_column: str | None = None,
                value_column: str | None = None, zone: tzinfo = UTC,
                time_format: str | None = None,
                extra_columns: tuple[str, ...] = (),
                spacing_s: float = 60.0) -> SeriesTable:
    """The rows of a CSV; ``source`` a path, ``'-'`` for stdin or a text stream. The time
    column is the one named ``timestamp`` (or ``time``, ``datetime``...) or else the first
    (with a ``date`` column beside a ``time`` of day, the two together), the value column
    ``value`` or else the second; a file without a header has its columns by number. The
    delimiter is sniffed among comma, semicolon, tab and bar. A file of one column has no
    times: its rows are taken ``spacing_s`` apart. ``extra_columns`` are also read as
    numbers (a benchmark's labels)."""
    name = "<stdin>" if str(source) == "-" else str(source)
    if isinstance(source, io.TextIOBase) and not isinstance(source, io.StringIO):
        name = getattr(source, "name", "<stream>")
        text = source.read()
    elif isinstance(source, io.StringIO):
        name, text = "<text>", source.getvalue()
    elif str(source) == "-":
        import sys

        text = _decode(sys.stdin.buffer.read())
    else:
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise SeriesCsvError(name, None, f"cannot read: {exc.strerror}") from None
        if b"\x00" in raw[:4096]:
            raise SeriesCsvError(name, None, "not a text file")
        text = _decode(raw)
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column, or nothing to tell by: commas
    decimal_comma = dialect.delimiter != ","
    # newline="": a carriage return inside a cell is the csv module's to judge
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        records = [row for row in reader
                   if any(cell.strip() for cell in row)]  # an empty line is no record
    except csv.Error as exc:  # a cell over the csv module's limit (128 KiB), a NUL
        raise SeriesCsvError(name, reader.line_num, f"not a readable CSV: {exc}") from None
    if not records:
        raise SeriesCsvError(name, None, "empty file: no header and no rows")
    if _looks_like_data(records[0], zone):
        header = [str(i + 1) for i in range(max(len(r) for r in records[:100]))]
        first_data_row = 1
    else:
        header, records = records[0], records[1:]
        first_data_row = 2
    if len(header) == 1 and time_column is None and not extra_columns:
        return _evenly_spaced(name, header, records, first_data_row, decimal_comma,
                              value_column, spacing_s)
    t_col = _column(header, time_column, TIME_NAMES, 0, name, "time")
    v_col = _column(header, value_column, VALUE_NAMES, 1 if t_col != 1 else 0, name, "value")
    if v_col == t_col:
        raise SeriesCsvError(name, 1, "the time and the value column are the same")
    x_cols = [_column(header, c, (), 0, name, c) for c in extra_columns]
    folded = [h.strip().lower() for h in header]
    # a logger's date and time of day in two columns: read as one
    d_col = (folded.index("date") if time_column is None and folded[t_col] == "time"
             and "date" in folded else None)

    def stamp_of(row: list[str]) -> str:
        stamp = row[t_col].strip() if t_col < len(row) else ""
        if d_col is not None and d_col < len(row):
            stamp = f"{row[d_col].strip()} {stamp}".strip()
        return stamp

    if not records:
        raise SeriesCsvError(name, first_data_row, "no data rows after the header")
    stamps = [stamp_of(row) for row in records]
    inferred = None if time_format is not None else infer_time_format(stamps, zone)
    cells: list[str] = []
    times: list[int] = []
    values: list[float] = []
    extra: list[list[float]] = [[] for _ in x_cols]
    bad_times = text_values = sentinels = 0
    last_time: int | None = None
    for row, stamp in zip(records, stamps, strict=True):
        cell = row[v_col] if v_col < len(row) else ""
        t = parse_time_ms(stamp, zone, time_format or inferred)
        if t is None and inferred is not None:
            t = parse_time_ms(stamp, zone)  # an ISO time among local ones
        if t is None:
            bad_times += 1
            t = last_time if last_time is not None else NO_TIME
        else:
            last_time = t
        value, kind = parse_value(cell, decimal_comma)
        text_values += kind == "text"
        sentinels += kind == "sentinel"
        cells.append(cell.strip())
        times.append(t)
        values.append(value)
        for k, c in enumerate(x_cols):
            extra[k].append(parse_value(row[c], decimal_comma)[0] if c < len(row)
                            else math.nan)
    if last_time is None:
        what = "no readable time in column " + (
            f"{header[d_col].strip()!r} and " if d_col is not None else "")
        raise SeriesCsvError(name, first_data_row,
                             f"{what}{header[t_col].strip()!r} (ISO-8601, epoch seconds "
                             f"or ms, or a day-first or month-first date; --time-format "
                             f"for others)")
    times_ms = np.array(times, dtype=np.int64)
    # rows before the first readable time take that time
    head = times_ms == NO_TIME
    if head.any():
        times_ms[head] = times_ms[~head][0]
    return SeriesTable(stamps, cells, times_ms, np.array(values, dtype=np.float64),
                       {c: np.array(v, dtype=np.float64)
                        for c, v in zip(extra_columns, extra, strict=True)},
                       bad_times, text_values, sentinels, time_format=inferred)


def _evenly_spaced(name: str, header: list[str], records: list[list[str]],
                   first_data_row: int, decimal_comma: bool, value_column: str | None,
                   spacing_s: float) -> SeriesTable:
    """A file of values alone (an exported column): rows ``spacing_s`` apart from 0."""
    _column(header, value_column, VALUE_NAMES, 0, name, "value")  # a wrong name is an error
    if not records:
        raise SeriesCsvError(name, first_data_row, "no data rows after the header")
    if not spacing_s > 0:
        raise SeriesCsvError(name, None, f"spacing {spacing_s} s: must be positive")
    cells = [row[0].strip() if row else "" for row in records]
    parsed = [parse_value(cell, decimal_comma) for cell in cells]
    table = SeriesTable([""] * len(cells), cells,
                        np.arange(len(cells), dtype=np.int64) * int(spacing_s * 1000),
                        np.array([v for v, _ in parsed], dtype=np.float64),
                        text_values=sum(kind == "text" for _, kind in parsed),
                        sentinels=sum(kind == "sentinel" for _, kind in parsed),
                        spacing_s=spacing_s)
    return table
