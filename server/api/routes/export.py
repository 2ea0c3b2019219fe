"""Streaming exports for labs: CSV or Parquet of a site or a set of series over a range.

Memory stays flat however long the range: CSV comes straight from PostgreSQL's COPY TO
STDOUT, chunk by chunk; Parquet is written one row group at a time from a server-side
cursor, and each finished group is sent before the next is read.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from ..deps import ConnDep, Reader, check_site
from ..models import ERRORS, NOT_FOUND
from ..params import time_range

router = APIRouter(prefix="/export", tags=["export"], responses=ERRORS)

ROW_GROUP = 100_000
_QUERY = """SELECT d.site_id, s.device_id, s.metric, r.time, r.value
            FROM readings r JOIN series s ON s.id = r.series_id
            JOIN devices d ON d.id = s.device_id
            WHERE r.series_id = ANY({ids}) AND r.time >= {start} AND r.time < {end}
            ORDER BY r.series_id, r.time"""
_SCHEMA = pa.schema([("site_id", pa.string()), ("device_id", pa.string()),
                     ("metric", pa.string()), ("time", pa.timestamp("us", tz="UTC")),
                     ("value", pa.float64())])


@router.get("", summary="Export readings as CSV or Parquet (streamed)",
            responses={**NOT_FOUND,
                       200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}},
                             "description": "site_id, device_id, metric, time, value"}})
def export(request: Request, conn: ConnDep, principal: Reader,
           site: Annotated[str | None, Query(examples=["oc-001"])] = None,
           series: Annotated[list[int] | None, Query(description="series ids")] = None,
           start: datetime | None = None, end: datetime | None = None,
           format: Literal["csv", "parquet"] = "csv"):
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
        missing = sorted(set(series) - {r[0] for r in rows})
        if missing:
            raise HTTPException(404, f"no series {missing}")
        for _, site_id in rows:
            check_site(principal, site_id)
        ids = [r[0] for r in rows]
    query = sql.SQL(_QUERY).format(ids=sql.Literal(ids), start=sql.Literal(start),
                                   end=sql.Literal(end))
    pool = request.app.state.pool
    name = f"tidefield-{site or 'series'}-{start:%Y%m%d}-{end:%Y%m%d}"
    if format == "csv":
        return StreamingResponse(_csv(pool, query), media_type="text/csv",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="{name}.csv"'})
    return StreamingResponse(_parquet(pool, query),
                             media_type="application/vnd.apache.parquet",
                             headers={"Content-Disposition":
                                      f'attachment; filename="{name}.parquet"'})


def _csv(pool, query):
    # A connection of its own: the response is streamed after the route has returned.
    with pool.connection() as conn, conn.cursor() as cur:
        copy_sql = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(query)
        with cur.copy(copy_sql) as copy:
            for chunk in copy:
                yield bytes(chunk)


class _Chunks(io.RawIOBase):
    """A write-only file that hands out what was written since the last call."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out, self._parts = b"".join(self._parts), []
        return out


def _parquet(pool, query):
    sink = _Chunks()
    # A server-side cursor lives in a transaction (the pool's connections autocommit).
    with pool.connection() as conn, conn.transaction(), \
            conn.cursor(name="tidefield_export") as cur:
        cur.itersize = ROW_GROUP
        cur.execute(query)
        with pq.ParquetWriter(sink, _SCHEMA, compression="zstd") as writer:
            while rows := cur.fetchmany(ROW_GROUP):
                columns = list(zip(*rows, strict=True))
                writer.write_table(pa.Table.from_arrays(
                    [pa.array(c, type=f.type) for c, f in zip(columns, _SCHEMA, strict=True)],
                    schema=_SCHEMA))
                yield sink.drain()
        yield sink.drain()
