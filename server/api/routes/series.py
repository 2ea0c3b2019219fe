from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Query, Response

from tidefield.server.db import Row
from tidefield.server.security.api_keys import Principal
from tidefield.server.web.deps import ReadConnDep, Reader, check_site

from ..models import (
    ERRORS,
    NOT_FOUND,
    BucketPoint,
    Point,
    Readings,
    Series,
    SeriesPage,
    json_response,
)
from ..query_params import aware, time_range

router = APIRouter(prefix="/series", tags=["series"], responses=ERRORS)

_SELECT = """SELECT s.id, s.device_id, d.site_id, s.metric, m.unit FROM series s
             JOIN devices d ON d.id = s.device_id JOIN metrics m ON m.name = s.metric
             JOIN sites si ON si.id = d.site_id"""

MAX_POINTS = 10_000

# Buckets served from the rollups: 5 minutes and 1 hour directly, a day by summing the
# hourly rollups (exact: hours nest in days in UTC and in China Standard Time alike).
_BUCKET_SQL = {
    "5m": """SELECT bucket, count, sum, min, max, last FROM readings_5m
             WHERE series_id = %(id)s AND bucket >= %(start)s AND bucket < %(end)s
             ORDER BY bucket LIMIT %(limit)s""",
    "1h": """SELECT bucket, count, sum, min, max, last FROM readings_1h
             WHERE series_id = %(id)s AND bucket >= %(start)s AND bucket < %(end)s
             ORDER BY bucket LIMIT %(limit)s""",
    "1d": """SELECT time_bucket(INTERVAL '1 day', bucket, %(tz)s) AS day, sum(count)::bigint,
                    sum(sum), min(min), max(max), last(last, last_time)
             FROM readings_1h
             WHERE series_id = %(id)s AND bucket >= %(start)s AND bucket < %(end)s
             GROUP BY day ORDER BY day LIMIT %(limit)s""",
}


def _series(row: Row) -> Series:
    return Series(id=row[0], device_id=row[1], site_id=row[2], metric=row[3], unit=row[4])


def series_row(conn: psycopg.Connection, principal: Principal, series_id: int) -> Row:
    row = conn.execute(_SELECT + " WHERE s.id = %s", (series_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no series {series_id}")
    check_site(principal, row[2])
    return row


@router.get("", response_model=SeriesPage, summary="List series")
def list_series(conn: ReadConnDep, principal: Reader,
                site: Annotated[str | None, Query(examples=["oc-001"])] = None,
                device: str | None = None,
                metric: Annotated[str | None, Query(examples=["dissolved_oxygen"])] = None,
                kind: Annotated[str | None, Query(description="the site's kind",
                                                  examples=["cage_farm"])] = None,
                district: Annotated[str | None, Query(examples=["huangdao"])] = None,
                limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                cursor: Annotated[int | None, Query(ge=0)] = None) -> SeriesPage:
    if site is not None:
        check_site(principal, site)
    rows = conn.execute(
        _SELECT + """ WHERE (%(site)s::text IS NULL OR d.site_id = %(site)s)
                      AND (%(device)s::text IS NULL OR s.device_id = %(device)s)
                      AND (%(metric)s::text IS NULL OR s.metric = %(metric)s)
                      AND (%(kind)s::text IS NULL OR si.kind = %(kind)s)
                      AND (%(district)s::text IS NULL OR si.district = %(district)s)
                      AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
                      AND (%(cursor)s::int IS NULL OR s.id > %(cursor)s)
                      ORDER BY s.id LIMIT %(limit)s""",
        {"site": site, "device": device, "metric": metric, "kind": kind,
         "district": district, "cursor": cursor,
         "limit": limit + 1,
         "sites": principal.site_list},
    ).fetchall()
    items = [_series(r) for r in rows[:limit]]
    return SeriesPage(items=items,
                      next_cursor=str(items[-1].id) if len(rows) > limit else None)


@router.get("/{series_id}", response_model=Series, responses=NOT_FOUND, summary="One series")
def get_series(series_id: int, conn: ReadConnDep, principal: Reader) -> Series:
    return _series(series_row(conn, principal, series_id))


@router.get("/{series_id}/readings", response_model=Readings, responses=NOT_FOUND,
            summary="Readings of a series, raw or bucketed")
def readings(series_id: int, conn: ReadConnDep, principal: Reader,
             start: Annotated[datetime | None, Query(
                 description="inclusive; ISO 8601 with a zone (default: end - 1 day)")] = None,
             end: Annotated[datetime | None, Query(
                 description="exclusive; ISO 8601 with a zone (default: now)")] = None,
             bucket: Literal["raw", "5m", "1h", "1d"] = "raw",
             tz: Annotated[str, Query(description="zone of day buckets",
                                      examples=["Asia/Shanghai"])] = "UTC",
             limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = MAX_POINTS,
             cursor: Annotated[datetime | None, Query(
                 description="next_cursor of the previous page")] = None) -> Response:
    row = series_row(conn, principal, series_id)
    start, end = time_range(start, end)
    if cursor is not None:
        start = max(start, aware(cursor, "cursor"))
    if tz not in _zones(conn):
        raise HTTPException(422, f"unknown time zone {tz!r}")
    params = {"id": series_id, "start": start, "end": end, "limit": limit + 1, "tz": tz}
    out = Readings(series_id=row[0], metric=row[3], unit=row[4], bucket=bucket)
    if bucket == "raw":
        rows = conn.execute("""SELECT time, value FROM readings
                               WHERE series_id = %(id)s AND time >= %(start)s
                                 AND time < %(end)s ORDER BY time LIMIT %(limit)s""",
                            params).fetchall()
        # model_construct: the rows' types are the schema's (timestamptz, float8)
        out.points = [Point.model_construct(time=t, value=v) for t, v in rows[:limit]]
    else:
        rows = conn.execute(_BUCKET_SQL[bucket], params).fetchall()
        out.buckets = [BucketPoint.model_construct(time=t, count=c, mean=s / c, min=lo,
                                                   max=hi, last=last)
                       for t, c, s, lo, hi, last in rows[:limit]]
    if len(rows) > limit:  # the next page starts at the first row not returned
        out.next_cursor = rows[limit][0].isoformat()
    return json_response(out)


_zone_cache: set[str] = set()


def _zones(conn: psycopg.Connection) -> set[str]:
    if not _zone_cache:
        _zone_cache.update(r[0] for r in conn.execute("SELECT name FROM pg_timezone_names"))
    return _zone_cache
