"""Anomalous readings the detector scored: what it saw, reading by reading."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from tidefield.server.web.deps import ReadConnDep, Reader, check_site

from ..models import ERRORS, Anomaly, AnomalyPage, Category
from ..query_params import Limit, SiteFilter, time_range

router = APIRouter(tags=["alerts"], responses=ERRORS)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@router.get("/anomalies", response_model=AnomalyPage,
            summary="Anomalous readings the detector scored, newest first")
def list_anomalies(conn: ReadConnDep, principal: Reader, site: SiteFilter = None,
                   series: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
                   category: Category | None = None,
                   min_score: Annotated[float, Query(ge=0, le=1)] = 0.0,
                   start: datetime | None = None, end: datetime | None = None,
                   limit: Limit = 500,
                   cursor: Annotated[str | None, Query(
                       description="next_cursor of a page", pattern=r"^\d{1,18}:\d{1,10}$")
                   ] = None) -> AnomalyPage:
    """The range defaults to the last day; pages go back in time."""
    if site is not None:
        check_site(principal, site)
    start, end = time_range(start, end)
    before_us, before_series = (int(p) for p in cursor.split(":")) if cursor else (None, None)
    rows = conn.execute(
        """SELECT a.series_id, d.site_id, s.device_id, s.metric, a.time,
                  CASE WHEN a.value = 'NaN' THEN NULL ELSE a.value END,
                  a.score, a.component, a.category
           FROM anomalies a JOIN series s ON s.id = a.series_id
           JOIN devices d ON d.id = s.device_id
           WHERE a.time >= %(start)s AND a.time < %(end)s
             AND (%(site)s::text IS NULL OR d.site_id = %(site)s)
             AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
             AND (%(series)s::int IS NULL OR a.series_id = %(series)s)
             AND (%(category)s::text IS NULL OR a.category = %(category)s)
             AND a.score >= %(min_score)s
             AND (%(before_us)s::bigint IS NULL OR (a.time, a.series_id) <
                  ('epoch'::timestamptz + %(before_us)s * interval '1 microsecond',
                   %(before_series)s))
           ORDER BY a.time DESC, a.series_id DESC LIMIT %(limit)s""",
        {"start": start, "end": end, "site": site, "sites": principal.site_list,
         "series": series, "category": category, "min_score": min_score,
         "before_us": before_us, "before_series": before_series, "limit": limit + 1},
    ).fetchall()
    items = [Anomaly(series_id=r[0], site_id=r[1], device_id=r[2], metric=r[3], time=r[4],
                     value=r[5], score=r[6], component=r[7], category=r[8])
             for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        micros = (last.time - EPOCH) // timedelta(microseconds=1)
        next_cursor = f"{micros}:{last.series_id}"
    return AnomalyPage(items=items, next_cursor=next_cursor)
