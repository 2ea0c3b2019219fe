"""The overview the operators' map is drawn from: every site's state in one call (sites
and devices in service: a retired one is expected to say nothing)."""

from __future__ import annotations

from fastapi import APIRouter

from tidefield.server.db import scalar
from tidefield.server.web.deps import ReadConnDep, Reader

from ..models import ERRORS, Overview, SiteOverview
from .devices import SILENT_INTERVALS, STATE_SQL

router = APIRouter(tags=["alerts"], responses=ERRORS)


@router.get("/overview", response_model=Overview,
            summary="Every site's state for the operators' map, in one call")
def overview(conn: ReadConnDep, principal: Reader) -> Overview:
    sites = principal.site_list
    rows = conn.execute(
        f"""WITH state AS (
              SELECT d.site_id, {STATE_SQL} AS state
              FROM devices d LEFT JOIN device_status st ON st.device_id = d.id
              WHERE (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
                AND d.retired_at IS NULL),  -- retired: no data expected
            active AS (
              SELECT site_id, count(*) AS n FROM alerts WHERE state <> 'closed'
              AND (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s)) GROUP BY site_id)
            SELECT s.id, coalesce(a.n, 0),
                   count(*) FILTER (WHERE st.state = 'online'),
                   count(st.state) FILTER (WHERE st.state <> 'online')
            FROM sites s LEFT JOIN state st ON st.site_id = s.id
            LEFT JOIN active a ON a.site_id = s.id
            WHERE (%(sites)s::text[] IS NULL OR s.id = ANY(%(sites)s))
              AND s.retired_at IS NULL
            GROUP BY s.id, a.n ORDER BY s.id""",
        {"silent": SILENT_INTERVALS, "sites": sites}).fetchall()
    items = [SiteOverview(site_id=site_id, open_alerts=alerts, devices_online=online,
                          devices_offline=offline,
                          state="offline" if online == 0 else "alert" if alerts else "ok")
             for site_id, alerts, online, offline in rows]
    by_severity = dict.fromkeys(("info", "warning", "critical"), 0)
    by_severity |= dict(conn.execute(
        """SELECT severity, count(*) FROM alerts WHERE state <> 'closed'
           AND (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s)) GROUP BY severity""",
        {"sites": sites}).fetchall())
    # ingest_batches records each accepted message with its reading count: what was
    # stored in the last minute, of the sites this key may see.
    stored = scalar(conn.execute(
        """SELECT coalesce(sum(b.readings), 0) FROM ingest_batches b
           JOIN devices d ON d.id = b.device_id
           WHERE b.received_at > now() - interval '60 seconds'
             AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))""",
        {"sites": sites}))
    return Overview(sites=items, devices_online=sum(i.devices_online for i in items),
                    devices_offline=sum(i.devices_offline for i in items),
                    open_alerts_by_severity=by_severity, readings_per_second=stored / 60)
