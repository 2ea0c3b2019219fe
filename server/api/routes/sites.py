from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from tidefield.server.db import Row
from tidefield.server.web.deps import ReadConnDep, Reader, check_site

from ..models import ERRORS, NOT_FOUND, Latest, Site, SitePage

router = APIRouter(prefix="/sites", tags=["sites"], responses=ERRORS)

_COLUMNS = "id, name_zh, name_en, kind, domain, district, lat, lon"


def _site(row: Row) -> Site:
    return Site(**dict(zip(_COLUMNS.split(", "), row, strict=True)))


@router.get("", response_model=SitePage, summary="List sites")
def list_sites(conn: ReadConnDep, principal: Reader,
               kind: Annotated[str | None, Query(examples=["cage_farm"])] = None,
               domain: Literal["agriculture", "ocean"] | None = None,
               district: Annotated[str | None, Query(examples=["pingdu"])] = None,
               metric: Annotated[str | None, Query(
                   description="only sites with a series of this metric")] = None,
               bbox: Annotated[str | None, Query(
                   description="min_lon,min_lat,max_lon,max_lat",
                   pattern=r"^-?\d+(\.\d+)?(,-?\d+(\.\d+)?){3}$")] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               cursor: Annotated[str | None, Query(description="next_cursor of a page")] = None,
               ) -> SitePage:
    box = [float(v) for v in bbox.split(",")] if bbox else None
    if box and (box[0] > box[2] or box[1] > box[3]):
        raise HTTPException(422, "bbox must be min_lon,min_lat,max_lon,max_lat")
    rows = conn.execute(
        f"""SELECT {_COLUMNS} FROM sites s
            WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
              AND (%(domain)s::text IS NULL OR domain = %(domain)s)
              AND (%(district)s::text IS NULL OR district = %(district)s)
              AND (%(sites)s::text[] IS NULL OR id = ANY(%(sites)s))
              AND (%(cursor)s::text IS NULL OR id > %(cursor)s)
              AND (%(box)s::float8[] IS NULL OR (lon BETWEEN (%(box)s)[1] AND (%(box)s)[3]
                                              AND lat BETWEEN (%(box)s)[2] AND (%(box)s)[4]))
              AND (%(metric)s::text IS NULL OR EXISTS (
                    SELECT 1 FROM devices d JOIN series x ON x.device_id = d.id
                    WHERE d.site_id = s.id AND x.metric = %(metric)s))
            ORDER BY id LIMIT %(limit)s""",
        {"kind": kind, "domain": domain, "district": district, "cursor": cursor,
         "box": box, "metric": metric, "limit": limit + 1,
         "sites": principal.site_list},
    ).fetchall()
    items = [_site(r) for r in rows[:limit]]
    return SitePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@router.get("/{site_id}", response_model=Site, responses=NOT_FOUND, summary="One site")
def get_site(site_id: str, conn: ReadConnDep, principal: Reader) -> Site:
    check_site(principal, site_id)
    row = conn.execute(f"SELECT {_COLUMNS} FROM sites WHERE id = %s", (site_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"no site {site_id!r}")
    return _site(row)


@router.get("/{site_id}/latest", response_model=list[Latest], responses=NOT_FOUND,
            summary="Latest value of every series of a site")
def latest(site_id: str, conn: ReadConnDep, principal: Reader) -> list[Latest]:
    """One index probe per series (newest row first), so it stays fast at any table size."""
    check_site(principal, site_id)
    get_site(site_id, conn, principal)
    rows = conn.execute(
        """SELECT s.id, s.device_id, s.metric, m.unit, r.time, r.value
           FROM series s JOIN devices d ON d.id = s.device_id
           JOIN metrics m ON m.name = s.metric
           LEFT JOIN LATERAL (SELECT time, value FROM readings
                              WHERE series_id = s.id ORDER BY time DESC LIMIT 1) r ON true
           WHERE d.site_id = %s ORDER BY s.device_id, s.metric""", (site_id,)).fetchall()
    return [Latest(series_id=r[0], device_id=r[1], metric=r[2], unit=r[3], time=r[4],
                   value=r[5]) for r in rows]
