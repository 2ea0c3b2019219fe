"""Operators' feedback on alerts ("real", "false alarm", "sensor fault, fixed", with a
note): given on one alert, listed (JSON or CSV), and reported week by week per rule and
component, the platform's own precision on real operations (``db.feedback``)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from tidefield.server.db import feedback
from tidefield.server.security import audit
from tidefield.server.security.api_keys import Scope
from tidefield.server.web.deps import (
    ConnDep,
    Operator,
    ReadConnDep,
    Reader,
    check_site,
    client_address,
)

from ..models import ERRORS, NOT_FOUND
from ..query_params import time_range

router = APIRouter(tags=["feedback"], responses={**ERRORS, **NOT_FOUND})

AlertId = Annotated[int, Path(ge=1, le=2**62)]
Verdict = Literal["real", "false_alarm", "sensor_fault_fixed"]


class NewFeedback(BaseModel):
    verdict: Verdict
    note: Annotated[str, Field(max_length=2000)] = ""


class FeedbackOut(BaseModel):
    id: int
    alert_id: int
    verdict: Verdict
    note: str
    actor: str
    at: datetime


class AlertVerdict(BaseModel):
    alert_id: int
    site_id: str
    device_id: str | None
    rule: str
    component: str
    opened_at: datetime
    verdict: Verdict
    note: str
    actor: str
    at: datetime


class WeekOut(BaseModel):
    week: datetime = Field(description="Monday 00:00 UTC of the week the alerts opened")
    rule: str
    component: str = Field(description="what the detector found at the opening reading; "
                                       "empty for alerts of a whole site")
    alerts: int
    judged: int
    real: int
    false_alarm: int
    sensor_fault_fixed: int
    precision: float | None = Field(description="(real + sensor_fault_fixed) / judged")


def _out(given: feedback.Feedback) -> FeedbackOut:
    return FeedbackOut.model_validate(given, from_attributes=True)


def _csv(header: list[str], rows: list[list[object]], name: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return PlainTextResponse(buffer.getvalue(), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{name}.csv"'})


@router.post("/alerts/{alert_id}/feedback", response_model=FeedbackOut, status_code=201,
             summary="Say what an alert was (operators)")
def give_feedback(alert_id: AlertId, body: NewFeedback, request: Request, conn: ConnDep,
                  principal: Operator) -> FeedbackOut:
    with conn.transaction():
        row = conn.execute("SELECT site_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        if row is None or not principal.may_see(row[0]):
            raise HTTPException(404, f"no alert {alert_id}")
        if not principal.may_act(Scope.OPERATE, row[0]):
            raise HTTPException(403, f"no operate right on site {row[0]} (read only)")
        before = feedback.feedback_of(conn, alert_id)
        given = feedback.add_feedback(conn, alert_id=alert_id, verdict=body.verdict,
                                      note=body.note.strip(), actor=principal.name,
                                      actor_user_id=principal.user_id)
        audit.record(conn, actor=principal, action="alert.feedback",
                     target=f"alert:{alert_id}", site_id=row[0],
                     before={"verdict": before[0].verdict, "note": before[0].note}
                     if before else None,
                     after={"verdict": given.verdict, "note": given.note},
                     source_address=client_address(request))
    return _out(given)


@router.get("/alerts/{alert_id}/feedback", response_model=list[FeedbackOut],
            summary="Every verdict on an alert, newest first")
def alert_feedback(alert_id: AlertId, conn: ReadConnDep, principal: Reader
                   ) -> list[FeedbackOut]:
    row = conn.execute("SELECT site_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    if row is None or not principal.may_see(row[0]):
        raise HTTPException(404, f"no alert {alert_id}")
    return [_out(f) for f in feedback.feedback_of(conn, alert_id)]


@router.get("/feedback", response_model=list[AlertVerdict],
            responses={200: {"content": {"text/csv": {}}}},
            summary="The verdict of each judged alert opened in a period (JSON or CSV)")
def list_feedback(conn: ReadConnDep, principal: Reader,
                  site: Annotated[str | None, Query(examples=["oc-001"])] = None,
                  start: datetime | None = None, end: datetime | None = None,
                  format: Literal["json", "csv"] = "json") -> list[AlertVerdict] | Response:
    start, end = time_range(start, end, default=timedelta(days=30))
    if site is not None:
        check_site(principal, site)
    rows = conn.execute(
        f"""SELECT a.id, a.site_id, a.device_id, a.rule, {feedback.COMPONENT_SQL},
                   a.opened_at, f.verdict, f.note, f.actor, f.at
            FROM alerts a
            JOIN LATERAL (SELECT verdict, note, actor, at FROM alert_feedback
                          WHERE alert_id = a.id ORDER BY id DESC LIMIT 1) f ON true
            WHERE a.opened_at >= %(start)s AND a.opened_at < %(end)s
              AND (%(site)s::text IS NULL OR a.site_id = %(site)s)
              AND (%(sites)s::text[] IS NULL OR a.site_id = ANY(%(sites)s))
            ORDER BY a.opened_at DESC, a.id DESC LIMIT 10000""",
        {"start": start, "end": end, "site": site, "sites": principal.site_list}).fetchall()
    names = list(AlertVerdict.model_fields)
    if format == "csv":
        return _csv(names, [[("" if v is None else v.isoformat() if isinstance(v, datetime)
                              else v) for v in row] for row in rows], "tidefield-feedback")
    return [AlertVerdict(**dict(zip(names, row, strict=True))) for row in rows]


@router.get("/feedback/weekly", response_model=list[WeekOut],
            responses={200: {"content": {"text/csv": {}}}},
            summary="Precision week by week, per rule and component (JSON or CSV)")
def weekly(conn: ReadConnDep, principal: Reader,
           site: Annotated[str | None, Query(examples=["oc-001"])] = None,
           start: datetime | None = None, end: datetime | None = None,
           format: Literal["json", "csv"] = "json") -> list[WeekOut] | Response:
    start, end = time_range(start, end, default=timedelta(weeks=12))
    if site is not None:
        check_site(principal, site)
    sites = [site] if site is not None else principal.site_list
    out = [WeekOut(week=r.week, rule=r.rule, component=r.component, alerts=r.alerts,
                   judged=r.judged, real=r.real, false_alarm=r.false_alarm,
                   sensor_fault_fixed=r.sensor_fault_fixed, precision=r.precision)
           for r in feedback.weekly_report(conn, sites=sites, since=start, until=end)]
    if format == "csv":
        names = list(WeekOut.model_fields)
        return _csv(names, [[("" if v is None else v.isoformat() if isinstance(v, datetime)
                              else v) for v in item.model_dump().values()] for item in out],
                    "tidefield-precision")
    return out
