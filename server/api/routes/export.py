"""Streaming exports for labs: CSV or Parquet of a site or a set of series over a range.

Memory stays flat however long the range: rows come by binary COPY, are cut into row
groups of ROW_GROUP rows, and each group is written (CSV or Parquet, by Arrow's writers)
and sent before the next is read.

Each reading carries its QARTOD flag and the test that set it (``qartod_flag``,
``qartod_test``; ``tidefield.server.detect.qartod``), from the detector's stored
anomalies: 9 missing, 4 fail, 3 suspect, 1 pass, 2 for readings after the detector's
watermark (not scored yet), so a lab can keep only what passed.

A reading taken while its site or device was in maintenance (``db.maintenance``: a sonde
lifted for cleaning) has ``maintenance`` true, and a passing or not-yet-scored flag
becomes 3 (suspect) with the test ``maintenance``: what a technician's hands did to the
water is no measurement of it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from tidefield.server.db import binary, maintenance
from tidefield.server.detect.qartod import (
    CATEGORIES,
    COMPONENTS,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    TESTS,
    flags_from_detector,
)
from tidefield.server.web.database import ReadPool
from tidefield.server.web.deps import ReadConnDep, Reader, check_site

from ..models import ERRORS, NOT_FOUND
from ..query_params import time_range

router = APIRouter(prefix="/export", tags=["export"], responses=ERRORS)

ROW_GROUP = 50_000
# Arrow's default pool (jemalloc or mimalloc) keeps freed memory for reuse: with the
# system allocator a finished row group's memory goes back at once.
pa.set_memory_pool(pa.system_memory_pool())
_NAME = pa.dictionary(pa.int32(), pa.string())
_SCHEMA = pa.schema([("site_id", _NAME), ("device_id", _NAME), ("metric", _NAME),
                     ("time", pa.timestamp("us", tz="UTC")), ("value", pa.float64()),
                     ("qartod_flag", pa.int8()), ("qartod_test", _NAME),
                     ("maintenance", pa.bool_())])
_CSV_SCHEMA = pa.schema([("site_id", pa.string()), ("device_id", pa.string()),
                         ("metric", pa.string()), ("time", pa.timestamp("us", tz="UTC")),
                         ("value", pa.float64()), ("qartod_flag", pa.int8()),
                         ("qartod_test", pa.string()), ("maintenance", pa.bool_())])
# the QARTOD tests, and one of ours: the reading was taken during maintenance
_TEST_NAMES = pa.array((*TESTS, "maintenance"), pa.string())
T_MAINTENANCE = len(TESTS)


@router.get("", summary="Export readings as CSV or Parquet (streamed)",
            responses={**NOT_FOUND,
                       200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
                             "description": "site_id, device_id, metric, time, value, "
                                            "qartod_flag, qartod_test, maintenance"}})
def export(request: Request, conn: ReadConnDep, principal: Reader,
           site: Annotated[str | None, Query(examples=["oc-001"])] = None,
           series: Annotated[list[int] | None, Query(description="series ids")] = None,
           start: datetime | None = None, end: datetime | None = None,
           format: Literal["csv", "parquet"] = "csv") -> StreamingResponse:
    if (site is None) == (series is None):
        raise HTTPException(422, "give either site or series")
    start, end = time_range(start, end)
    if site is not None:
        check_site(principal, site)
        ids = [r[0] for r in conn.execute(
            "SELECT s.id FROM series s JOIN devices d ON d.id = s.device_id "
            "WHERE d.site_id = %s", (site,))]
        if not ids and conn.execute("SELECT 1 FROM sites WHERE id = %s",
                                    (site,)).fetchone() is None:
            raise HTTPException(404, f"no site {site!r}")
    else:
        rows = conn.execute("SELECT s.id, d.site_id FROM series s JOIN devices d "
                            "ON d.id = s.device_id WHERE s.id = ANY(%s)", (series,)).fetchall()
        missing = sorted(set(series or ()) - {r[0] for r in rows})
        if missing:
            raise HTTPException(404, f"no series {missing}")
        for _, site_id in rows:
            check_site(principal, site_id)
        ids = [r[0] for r in rows]
    groups = _row_groups(request.app.state.read_pool, ids, start, end)
    name = f"tidefield-{site or 'series'}-{start:%Y%m%d}-{end:%Y%m%d}"
    if format == "csv":
        return StreamingResponse(_csv(groups), media_type="text/csv",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="{name}.csv"'})
    return StreamingResponse(_parquet(groups),
                             media_type="application/vnd.apache.parquet",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{name}.parquet"'})


class _Chunks(io.RawIOBase):
    """A write-only file that hands out what was written since the last call."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def _row_groups(pool: ReadPool, ids: list[int], start: datetime, end: datetime
                ) -> Iterator[pa.Table]:
    """Arrow tables of at most ROW_GROUP rows, in series and time order.

    Rows come by binary COPY, whose rows here have a fixed width, so each chunk is cut at
    a row boundary and parsed by NumPy; names are dictionary-encoded (a handful of
    distinct strings), so memory holds one row group at a time.
    """
    with pool.connection() as (conn, _):
        names = {sid: (site, device, metric) for sid, site, device, metric in conn.execute(
            "SELECT s.id, d.site_id, s.device_id, s.metric FROM series s "
            "JOIN devices d ON d.id = s.device_id WHERE s.id = ANY(%s)", (ids,))}
        order = sorted(names)
        position = np.full(max(order, default=0) + 1, -1, dtype=np.int32)
        position[order] = np.arange(len(order), dtype=np.int32)
        dictionaries = [pa.array([names[sid][k] for sid in order], pa.string())
                        for k in range(3)]
        # (series id, start ms, end ms) of each maintenance window over each series
        windows = [(sid, int(w.starts_at.timestamp() * 1000), int(w.ends_at.timestamp() * 1000))
                   for w in maintenance.windows(conn, sites=sorted({n[0] for n in
                                                                    names.values()}),
                                                since=start, until=end)
                   for sid, (site, device, _) in names.items()
                   if site == w.site_id and w.device_id in (None, device)]
        # every reading with its stored anomaly (if any) as fixed-width numbers: the
        # component's and category's index (0: none), the score, and whether the
        # detector has scored it (at or before the least watermark of its partitions)
        copy_sql = sql.SQL(
            "COPY (SELECT r.series_id, r.time, r.value, coalesce(a.score, 0)::float8, "
            "coalesce(array_position({components}, a.component) - 1, 0)::int4, "
            "coalesce(array_position({categories}, a.category) - 1, 0)::int4, "
            "(r.time <= coalesce((SELECT min(watermark) FROM detector_checkpoints), "
            "'-infinity'))::int4 "
            "FROM readings r LEFT JOIN anomalies a ON a.series_id = r.series_id "
            "AND a.time = r.time WHERE r.series_id = ANY({ids}) "
            "AND r.time >= {start} AND r.time < {end} ORDER BY r.series_id, r.time) "
            "TO STDOUT (FORMAT BINARY)").format(
                ids=sql.Literal(ids), start=sql.Literal(start), end=sql.Literal(end),
                components=sql.Literal(list(COMPONENTS)),
                categories=sql.Literal(list(CATEGORIES)))

        def table(body: bytes) -> pa.Table:
            sid, pg_us, value, score, component, category, scored = binary.decode_rows(
                body, _TYPES)
            flag, test = flags_from_detector(value, score, component, category, scored)
            time_ms = binary.pg_us_to_ms(pg_us)
            held = np.zeros(sid.shape, dtype=bool)
            for series_id, window_start, window_end in windows:
                held |= (sid == series_id) & (time_ms >= window_start) & (time_ms < window_end)
            downgraded = held & ((flag == PASS) | (flag == NOT_EVALUATED))
            flag[downgraded] = SUSPECT
            test = test.astype(np.int32)
            test[downgraded] = T_MAINTENANCE
            index = pa.array(position[sid])
            return pa.Table.from_arrays(
                [pa.DictionaryArray.from_arrays(index, d) for d in dictionaries]
                + [pa.array(binary.pg_us_to_ms(pg_us) * 1000, pa.timestamp("us", "UTC")),
                   pa.array(value), pa.array(flag),
                   pa.DictionaryArray.from_arrays(pa.array(test), _TEST_NAMES),
                   pa.array(held)], schema=_SCHEMA)

        pending = bytearray()
        header_seen = False
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for chunk in copy:
                pending += chunk
                if not header_seen and len(pending) >= len(binary.HEADER):
                    del pending[:len(binary.HEADER)]
                    header_seen = True
                if len(pending) >= ROW_GROUP * _ROW_WIDTH:
                    usable = ROW_GROUP * _ROW_WIDTH
                    yield table(bytes(pending[:usable]))
                    del pending[:usable]
        rest = len(pending) - len(binary.TRAILER)
        if rest > 0:
            yield table(bytes(pending[:rest]))


def _csv(groups: Iterable[pa.Table]) -> Iterator[bytes]:
    sink = _Chunks()
    with pa_csv.CSVWriter(sink, _CSV_SCHEMA) as writer:
        for group in groups:
            writer.write_table(group.cast(_CSV_SCHEMA))
            yield sink.drain()
    yield sink.drain()


def _parquet(groups: Iterable[pa.Table]) -> Iterator[bytes]:
    sink = _Chunks()
    with pq.ParquetWriter(sink, _SCHEMA, compression="zstd") as writer:
        for group in groups:
            writer.write_table(group)
            yield sink.drain()
    yield sink.drain()


_TYPES = ["int4", "timestamptz", "float8", "float8", "int4", "int4", "int4"]
_ROW_WIDTH = binary.row_width(_TYPES)
