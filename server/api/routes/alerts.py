"""Alerts (list, one with its history, acknowledge), anomalies, and the overview that the
operators' map is drawn from. The detector writes these tables; this is how people read
them and act on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query

from tidefield.server.web.deps import ConnDep, Operator, Reader, check_site

from ..models import (
    ERRORS,
    NOT_FOUND,
    Acknowledgement,
    Alert,
    AlertDetail,
    AlertEvent,
    AlertPage,
    Anomaly,
    AnomalyPage,
    Category,
    Overview,
    Severity,
    SiteOverview,
)
from ..time_params import aware, time_range
from .devices import SILENT_INTERVALS, STATE_SQL

router = APIRouter(tags=["alerts"], responses=ERRORS)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_ALERT_COLUMNS = ("id", "site_id", "device_id", "series_id", "rule", "category", "severity",
                  "state", "message", "opened_at", "updated_at", "closed_at", "value",
                  "peak_value", "acknowledged_by", "acknowledged_at", "ack_comment")
_ALERT_SELECT = f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts"

SiteFilter = Annotated[str | None, Query(examples=["oc-001"])]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise HTTPException(422, "cursor: not a cursor this endpoint returned")
    return int(cursor)


@router.get("/alerts", response_model=AlertPage, summary="List alerts, newest first")
def list_alerts(conn: ConnDep, principal: Reader, site: SiteFilter = None,
                rule: Annotated[str | None, Query(examples=["hypoxia"])] = None,
                category: Category | None = None, severity: Severity | None = None,
                state: Annotated[Literal["open", "acknowledged", "closed", "active"] | None,
                                 Query(description="active: open or acknowledged")] = None,
                since: Annotated[datetime | None, Query(
                    description="alerts still active at or opened after this time")] = None,
                until: Annotated[datetime | None, Query(
                    description="alerts opened before this time")] = None,
                limit: Limit = 100, cursor: str | None = None) -> AlertPage:
    if site is not None:
        check_site(principal, site)
    since = aware(since, "since") if since is not None else None
    until = aware(until, "until") if until is not None else None
    states = {"active": ["open", "acknowledged"], None: None}.get(state, [state])
    rows = conn.execute(
        _ALERT_SELECT + """
        WHERE (%(site)s::text IS NULL OR site_id = %(site)s)
          AND (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s))
          AND (%(rule)s::text IS NULL OR rule = %(rule)s)
          AND (%(category)s::text IS NULL OR category = %(category)s)
          AND (%(severity)s::text IS NULL OR severity = %(severity)s)
          AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
          AND (%(since)s::timestamptz IS NULL OR coalesce(closed_at, 'infinity') >= %(since)s)
          AND (%(until)s::timestamptz IS NULL OR opened_at < %(until)s)
          AND (%(cursor)s::bigint IS NULL OR id < %(cursor)s)
        ORDER BY id DESC LIMIT %(limit)s""",
        {"site": site, "sites": principal.site_list, "rule": rule,
         "category": category, "severity": severity, "states": states, "since": since,
         "until": until, "cursor": _int_cursor(cursor), "limit": limit + 1}).fetchall()
    items = [Alert(**dict(zip(_ALERT_COLUMNS, r, strict=True))) for r in rows[:limit]]
    return AlertPage(items=items,
                     next_cursor=str(items[-1].id) if len(rows) > limit else None)


def _alert_detail(conn, alert_id: int, principal) -> AlertDetail:
    row = conn.execute(_ALERT_SELECT + " WHERE id = %s", (alert_id,)).fetchone()
    # Another site's alert is "not found", not "forbidden": a key limited to its sites
    # learns nothing of the others, not even which alert ids exist.
    if row is None or not principal.may_see(row[1]):
        raise HTTPException(404, f"no alert {alert_id}")
    history = conn.execute(
        "SELECT at, action, actor, note, value FROM alert_events WHERE alert_id = %s "
        "ORDER BY at, id", (alert_id,)).fetchall()
    return AlertDetail(**dict(zip(_ALERT_COLUMNS, row, strict=True)),
                       history=[AlertEvent(at=h[0], action=h[1], actor=h[2], note=h[3],
                                           value=h[4]) for h in history])


AlertId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/alerts/{alert_id}", response_model=AlertDetail, responses=NOT_FOUND,
            summary="One alert with its history")
def get_alert(alert_id: AlertId, conn: ConnDep, principal: Reader) -> AlertDetail:
    return _alert_detail(conn, alert_id, principal)


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertDetail,
             responses={**NOT_FOUND, 409: ERRORS[422] | {
                 "description": "the alert is closed or already acknowledged"}},
             summary="Acknowledge an open alert (operate scope)")
def acknowledge(alert_id: AlertId, body: Acknowledgement, conn: ConnDep,
                principal: Operator) -> AlertDetail:
    """Records who acknowledged it and when; the detector still closes it when the
    condition clears."""
    with conn.transaction():
        row = conn.execute("SELECT site_id, state, acknowledged_by FROM alerts WHERE id = %s "
                           "FOR UPDATE", (alert_id,)).fetchone()
        if row is None or not principal.may_see(row[0]):
            raise HTTPException(404, f"no alert {alert_id}")
        if row[1] != "open":
            who = f" by {row[2]}" if row[2] else ""
            raise HTTPException(409, f"alert {alert_id} is {row[1]}{who}")
        comment = body.comment.strip() or None
        conn.execute("""UPDATE alerts SET state = 'acknowledged', acknowledged_by = %s,
                          acknowledged_at = now(), ack_comment = %s WHERE id = %s""",
                     (principal.name, comment, alert_id))
        conn.execute("""INSERT INTO alert_events (alert_id, action, actor, note)
                        VALUES (%s, 'acknowledged', %s, %s)""",
                     (alert_id, principal.name, comment))
    return _alert_detail(conn, alert_id, principal)


@router.get("/anomalies", response_model=AnomalyPage,
            summary="Anomalous readings the detector scored, newest first")
def list_anomalies(conn: ConnDep, principal: Reader, site: SiteFilter = None,
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


@router.get("/overview", response_model=Overview,
            summary="Every site's state for the operators' map, in one call")
def overview(conn: ConnDep, principal: Reader) -> Overview:
    sites = principal.site_list
    rows = conn.execute(
        f"""WITH state AS (
              SELECT d.site_id, {STATE_SQL} AS state
              FROM devices d LEFT JOIN device_status st ON st.device_id = d.id
              WHERE %(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s)),
            active AS (
              SELECT site_id, count(*) AS n FROM alerts WHERE state <> 'closed'
              AND (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s)) GROUP BY site_id)
            SELECT s.id, coalesce(a.n, 0),
                   count(*) FILTER (WHERE st.state = 'online'),
                   count(st.state) FILTER (WHERE st.state <> 'online')
            FROM sites s LEFT JOIN state st ON st.site_id = s.id
            LEFT JOIN active a ON a.site_id = s.id
            WHERE %(sites)s::text[] IS NULL OR s.id = ANY(%(sites)s)
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
    stored = conn.execute(
        """SELECT coalesce(sum(b.readings), 0) FROM ingest_batches b
           JOIN devices d ON d.id = b.device_id
           WHERE b.received_at > now() - interval '60 seconds'
             AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))""",
        {"sites": sites}).fetchone()[0]
    return Overview(sites=items, devices_online=sum(i.devices_online for i in items),
                    devices_offline=sum(i.devices_offline for i in items),
                    open_alerts_by_severity=by_severity, readings_per_second=stored / 60)
