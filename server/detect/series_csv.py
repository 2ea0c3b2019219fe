"""Reading a real sensor CSV for scoring: every data row is kept, in input order.

Real loggers write repeated and backward times, gaps, blank, ``NaN`` and text cells and
no-data sentinels (-9999, 65535). None of them stops a file: a row whose value cannot be
read is a missing reading (scored as such), a row whose time cannot be read takes the
time before it (a repeated time), and ``detector.score_values`` repairs the clock. Only a
file that cannot be read at all (no such file, not text, no header, a named column that
is not there, no row with a readable time) raises ``SeriesCsvError`` with one line that
names the file, the row and what is wrong.

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


def parse_value(text: str) -> tuple[float, str]:
    """The reading of a value cell and what it was: ``ok``, ``text`` (blank, NaN-like or
    unreadable: a missing reading) or ``sentinel``."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return math.nan, "text"
    if not math.isfinite(value):
        return math.nan, "text" if math.isnan(value) else "ok"  # inf stays: out of range
    if value in SENTINELS:
        return math.nan, "sentinel"
    return value, "ok"


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
                extra_columns: tuple[str, ...] = ()) -> SeriesTable:
    """The rows of a CSV with a header; ``source`` a path, ``'-'`` for stdin or a text
    stream. The time column is the one named ``timestamp`` (or ``time``, ``datetime``...)
    or else the first, the value column ``value`` or else the second; the delimiter is
    sniffed among comma, semicolon, tab and bar. ``extra_columns`` are also read as
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
    reader = csv.reader(io.StringIO(text), dialect)
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        raise SeriesCsvError(name, None, "empty file: no header")
    t_col = _column(header, time_column, TIME_NAMES, 0, name, "time")
    v_col = _column(header, value_column, VALUE_NAMES, 1 if t_col != 1 else 0, name, "value")
    if v_col == t_col:
        raise SeriesCsvError(name, 1, "the time and the value column are the same")
    x_cols = [_column(header, c, (), 0, name, c) for c in extra_columns]
    stamps: list[str] = []
    cells: list[str] = []
    times: list[int] = []
    values: list[float] = []
    extra: list[list[float]] = [[] for _ in x_cols]
    bad_times = text_values = sentinels = 0
    last_time: int | None = None
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # an empty line is no record
        stamp = row[t_col] if t_col < len(row) else ""
        cell = row[v_col] if v_col < len(row) else ""
        t = parse_time_ms(stamp, zone, time_format)
        if t is None:
            bad_times += 1
            t = last_time if last_time is not None else NO_TIME
        else:
            last_time = t
        value, kind = parse_value(cell)
        text_values += kind == "text"
        sentinels += kind == "sentinel"
        stamps.append(stamp.strip())
        cells.append(cell.strip())
        times.append(t)
        values.append(value)
        for k, c in enumerate(x_cols):
            extra[k].append(parse_value(row[c])[0] if c < len(row) else math.nan)
    if not stamps:
        raise SeriesCsvError(name, 2, "no data rows after the header")
    if last_time is None:
        raise SeriesCsvError(name, 2, f"no readable time in column "
                                      f"{header[t_col].strip()!r} (ISO-8601, epoch seconds "
                                      f"or ms; --time-format for others)")
    times_ms = np.array(times, dtype=np.int64)
    # rows before the first readable time take that time
    head = times_ms == NO_TIME
    if head.any():
        times_ms[head] = times_ms[~head][0]
    return SeriesTable(stamps, cells, times_ms, np.array(values, dtype=np.float64),
                       {c: np.array(v, dtype=np.float64)
                        for c, v in zip(extra_columns, extra, strict=True)},
                       bad_times, text_values, sentinels)
