"""Backfill to files: readings and labels of a labelled scenario, streamed chunk by chunk.

A scenario directory holds

* ``readings.csv`` or ``readings.parquet``: ``site_id, device_id, metric, time, value``
  in time order (ties: series order). CSV times are ISO-8601 UTC strings
  (``2025-04-01T00:00:00Z``; every sample falls on a whole second); Parquet times are
  ``timestamp[ms, UTC]``, the same instants typed. CSV fields are never quoted: ids
  follow the topic grammar (lowercase letters, digits, '-'), metric names are identifiers.
* ``labels.csv`` or ``labels.parquet``: ``site_id, device_id, metric, start, end, kind,
  category, event_id``; ``[start, end)`` in the same time format.
* ``scenario.json``: how it was made (seed, window, plan, counts), enough to make it again.

Memory stays constant: one chunk (``chunk_ms`` of fleet readings) is in flight at a time.
The same seed and window give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .events import InjectionPlan, Label
from .fleet import DEFAULT_CHUNK_MS, Chunk, Fleet

log = logging.getLogger(__name__)

FORMATS = ("csv", "parquet")
READING_COLUMNS = ("site_id", "device_id", "metric", "time", "value")
LABEL_COLUMNS = ("site_id", "device_id", "metric", "start", "end", "kind", "category",
                 "event_id")

Progress = Callable[[int, int], None]  # (readings written so far, ms of the window done)


@dataclass(frozen=True, slots=True)
class ScenarioSummary:
    directory: Path
    readings: int
    labels: int
    start_ms: int
    end_ms: int


def iso_utc(times_ms: np.ndarray) -> np.ndarray:
    """ISO-8601 UTC strings ("...Z") of integer ms; whole seconds print without a fraction."""
    times_ms = np.asarray(times_ms, dtype=np.int64)
    whole = bool((times_ms % 1000 == 0).all())
    unit = "s" if whole else "ms"
    as_datetime = (times_ms // 1000 if whole else times_ms).astype(f"datetime64[{unit}]")
    return np.datetime_as_string(as_datetime, unit=unit, timezone="UTC")  # type: ignore[call-overload]


def _codes(names: tuple[str, ...]) -> tuple[np.ndarray, pa.Array]:
    distinct = list(dict.fromkeys(names))
    position = {name: i for i, name in enumerate(distinct)}
    return (np.array([position[n] for n in names], dtype=np.int32),
            pa.array(distinct, type=pa.string()))


class _ChunkTables:
    """Turns chunks into Arrow tables; ids are dictionary columns over the series table."""

    def __init__(self, fleet: Fleet, fmt: str) -> None:
        table = fleet.table
        self.fmt = fmt
        # per column: the distinct names, and each series' code into them
        self.site = _codes(table.site_ids)
        self.device = _codes(table.device_ids)
        self.metric = _codes(table.metrics)
        time_type = pa.string() if fmt == "csv" else pa.timestamp("ms", tz="UTC")
        dictionary = pa.dictionary(pa.int32(), pa.string())
        self.schema = pa.schema([("site_id", dictionary), ("device_id", dictionary),
                                 ("metric", dictionary), ("time", time_type),
                                 ("value", pa.float64())])

    def table(self, chunk: Chunk) -> pa.Table:
        columns = [pa.DictionaryArray.from_arrays(pa.array(codes[chunk.series]), names)
                   for codes, names in (self.site, self.device, self.metric)]
        columns += [self._times(chunk.time_ms), pa.array(chunk.value, type=pa.float64())]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _times(self, times_ms: np.ndarray) -> pa.Array:
        if self.fmt == "parquet":
            return pa.array(times_ms, type=pa.timestamp("ms", tz="UTC"))
        if times_ms.shape[0] == 0:
            return pa.array([], type=pa.string())
        # Times are sorted and repeat (many series sample on the same second): format each
        # distinct instant once and let the CSV writer expand a dictionary.
        new = np.empty(times_ms.shape[0], dtype=bool)
        new[0] = True
        np.not_equal(times_ms[1:], times_ms[:-1], out=new[1:])
        indices = np.cumsum(new, dtype=np.int32) - 1
        strings = pa.array(iso_utc(times_ms[new]), type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(indices), strings).cast(pa.string())


class _ReadingsWriter:
    def __init__(self, path: Path, tables: _ChunkTables) -> None:
        self.tables = tables
        self.path = path
        if tables.fmt == "csv":
            self._sink = pa.OSFile(str(path), "wb")
            self._sink.write(",".join(READING_COLUMNS).encode() + b"\n")
            self._options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        else:
            self._writer = pq.ParquetWriter(str(path), tables.schema, compression="zstd")

    def write(self, chunk: Chunk) -> None:
        if not len(chunk):
            return
        table = self.tables.table(chunk)
        if self.tables.fmt == "csv":
            pacsv.write_csv(table, self._sink, self._options)
        else:
            self._writer.write_table(table)

    def close(self) -> None:
        if self.tables.fmt == "csv":
            self._sink.close()
        else:
            self._writer.close()


def write_labels(path: Path, labels: list[Label], fmt: str) -> None:
    columns = {name: [getattr(label, name) for label in labels]
               for name in ("site_id", "device_id", "metric", "kind", "category", "event_id")}
    starts = np.array([label.start_ms for label in labels], dtype=np.int64)
    ends = np.array([label.end_ms for label in labels], dtype=np.int64)
    if fmt == "csv":
        start_col = pa.array(iso_utc(starts) if labels else [], type=pa.string())
        end_col = pa.array(iso_utc(ends) if labels else [], type=pa.string())
    else:
        start_col = pa.array(starts, type=pa.timestamp("ms", tz="UTC"))
        end_col = pa.array(ends, type=pa.timestamp("ms", tz="UTC"))
    table = pa.table({
        "site_id": pa.array(columns["site_id"], type=pa.string()),
        "device_id": pa.array(columns["device_id"], type=pa.string()),
        "metric": pa.array(columns["metric"], type=pa.string()),
        "start": start_col, "end": end_col,
        "kind": pa.array(columns["kind"], type=pa.string()),
        "category": pa.array(columns["category"], type=pa.string()),
        "event_id": pa.array(columns["event_id"], type=pa.string()),
    })
    if fmt == "csv":
        with pa.OSFile(str(path), "wb") as sink:
            sink.write(",".join(LABEL_COLUMNS).encode() + b"\n")
            pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False,
                                                            quoting_style="none"))
    else:
        pq.write_table(table, str(path), compression="zstd")


def scenario_plan(start_ms: int, end_ms: int, *, faults_per_series: float = 0.5,
                  events_per_site: float = 1.0, fault_kinds: tuple[str, ...] | None = None,
                  event_kinds: tuple[str, ...] | None = None) -> InjectionPlan:
    """A plan with one epoch anchored on the scenario's window: no label straddles it."""
    options = {}
    if fault_kinds is not None:
        options["fault_kinds"] = fault_kinds
    if event_kinds is not None:
        options["event_kinds"] = event_kinds
    return InjectionPlan(faults_per_series=faults_per_series, events_per_site=events_per_site,
                         epoch_ms=end_ms - start_ms, anchor_ms=start_ms, **options)


def write_scenario(fleet: Fleet, directory: Path, start_ms: int, end_ms: int, *,
                   fmt: str = "csv", chunk_ms: int = DEFAULT_CHUNK_MS,
                   progress: Progress | None = None) -> ScenarioSummary:
    """Generate [start_ms, end_ms) of ``fleet`` into ``directory`` (created if needed)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if end_ms <= start_ms:
        raise ValueError("the scenario window is empty")
    directory.mkdir(parents=True, exist_ok=True)
    labels = fleet.labels(start_ms, end_ms) if fleet.plan is not None else []
    write_labels(directory / f"labels.{fmt}", labels, fmt)
    writer = _ReadingsWriter(directory / f"readings.{fmt}", _ChunkTables(fleet, fmt))
    written = 0
    try:
        for chunk in fleet.chunks(start_ms, end_ms, chunk_ms):
            writer.write(chunk)
            written += len(chunk)
            log.debug("chunk written", extra={"end_ms": chunk.end_ms, "readings": written})
            if progress is not None:
                progress(written, chunk.end_ms - start_ms)
    finally:
        writer.close()
    meta = {
        "seed": fleet.seed, "start_ms": start_ms, "end_ms": end_ms,
        "start": str(iso_utc(np.array([start_ms]))[0]), "end": str(iso_utc(np.array([end_ms]))[0]),
        "sites": len(fleet.table.sites), "series": len(fleet.table), "format": fmt,
        "readings": written, "labels": len(labels),
        "plan": dataclasses.asdict(fleet.plan) if fleet.plan is not None else None,
    }
    (directory / "scenario.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("scenario written", extra={"directory": str(directory), "readings": written,
                                        "labels": len(labels)})
    return ScenarioSummary(directory, written, len(labels), start_ms, end_ms)
