from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from tidefield.server.db import Row
from tidefield.server.web.deps import ReadConnDep, Reader, check_site

from ..models import ERRORS, NOT_FOUND, Device, DevicePage, DeviceStatus

router = APIRouter(prefix="/devices", tags=["devices"], responses=ERRORS)

# A device is offline after its last will, or when silent for this many of its intervals.
SILENT_INTERVALS = 3

# A device's state from its status row ``st`` and its registry row ``d``; the parameter
# %(silent)s is SILENT_INTERVALS. The overview counts devices with the same expression.
STATE_SQL = """
       CASE WHEN st.last_seen IS NULL AND st.state IS DISTINCT FROM 'online'
                 AND st.state IS DISTINCT FROM 'offline' THEN 'unknown'
            WHEN st.state = 'offline' AND (st.last_seen IS NULL
                 OR st.last_seen <= st.state_changed) THEN 'offline'
            WHEN greatest(st.last_seen, st.birth_at) > now()
                 - make_interval(secs => %(silent)s * coalesce(st.reported_interval_s,
                                                               d.interval_s)) THEN 'online'
            ELSE 'offline' END"""

_SELECT = f"""
SELECT d.id, d.site_id, d.template, d.model, d.interval_s, {STATE_SQL},
       st.last_seen, st.last_reading,
       coalesce(st.max_seq - st.min_seq + 1 - st.batches, 0), d.retired_at IS NOT NULL
FROM devices d JOIN sites si ON si.id = d.site_id
LEFT JOIN device_status st ON st.device_id = d.id
"""


def _device(row: Row) -> Device:
    return Device(id=row[0], site_id=row[1], template=row[2], model=row[3],
                  interval_s=row[4], status=DeviceStatus(state=row[5], last_seen=row[6],
                                                         last_reading=row[7],
                                                         missing_batches=row[8]),
                  retired=row[9])


@router.get("", response_model=DevicePage, summary="List devices with their status")
def list_devices(conn: ReadConnDep, principal: Reader,
                 site: Annotated[str | None, Query(examples=["oc-001"])] = None,
                 kind: Annotated[str | None, Query(description="the site's kind",
                                                   examples=["cage_farm"])] = None,
                 district: Annotated[str | None, Query(examples=["huangdao"])] = None,
                 template: Annotated[str | None, Query(examples=["sonde"])] = None,
                 metric: Annotated[str | None, Query(
                     description="only devices with a series of this metric")] = None,
                 state: Literal["online", "offline", "unknown"] | None = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                 cursor: str | None = None) -> DevicePage:
    if site is not None:
        check_site(principal, site)
    rows = conn.execute(
        _SELECT + f"""WHERE (%(site)s::text IS NULL OR d.site_id = %(site)s)
                     AND (%(kind)s::text IS NULL OR si.kind = %(kind)s)
                     AND (%(district)s::text IS NULL OR si.district = %(district)s)
                     AND (%(template)s::text IS NULL OR d.template = %(template)s)
                     AND (%(metric)s::text IS NULL OR EXISTS (
                          SELECT 1 FROM series x WHERE x.device_id = d.id
                          AND x.metric = %(metric)s))
                     AND (%(state)s::text IS NULL OR {STATE_SQL} = %(state)s)
                     AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
                     AND (%(cursor)s::text IS NULL OR d.id > %(cursor)s)
                     ORDER BY d.id LIMIT %(limit)s""",
        {"silent": SILENT_INTERVALS, "site": site, "kind": kind, "district": district,
         "template": template, "metric": metric, "state": state, "cursor": cursor,
         "limit": limit + 1,
         "sites": principal.site_list},
    ).fetchall()
    items = [_device(r) for r in rows[:limit]]
    return DevicePage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@router.get("/{device_id}", response_model=Device, responses=NOT_FOUND, summary="One device")
def get_device(device_id: str, conn: ReadConnDep, principal: Reader) -> Device:
    row = conn.execute(_SELECT + "WHERE d.id = %(id)s",
                       {"silent": SILENT_INTERVALS, "id": device_id}).fetchone()
    if row is None:
        raise HTTPException(404, f"no device {device_id!r}")
    check_site(principal, row[1])
    return _device(row)
