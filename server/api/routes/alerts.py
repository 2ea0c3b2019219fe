"""Alerts (list, one with its history, acknowledge, confirm a suggested response). The
detector writes them; this is how people read them and act on them."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Literal

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request

from tidefield.server.detect import responses
from tidefield.server.security import audit
from tidefield.server.security.api_keys import Principal, Scope
from tidefield.server.web.deps import (
    ConnDep,
    Operator,
    ReadConnDep,
    Reader,
    check_site,
    client_address,
)

from ..models import (
    ERRORS,
    NOT_FOUND,
    Acknowledgement,
    Alert,
    AlertCategory,
    AlertDetail,
    AlertEvent,
    AlertPage,
    Severity,
    SuggestedResponse,
)
from ..query_params import Limit, SiteFilter, aware

router = APIRouter(tags=["alerts"], responses=ERRORS)

# the response model's fields are the columns read, in its order
_ALERT_COLUMNS = tuple(Alert.model_fields)
_ALERT_SELECT = f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts"


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise HTTPException(422, "cursor: not a cursor this endpoint returned")
    return int(cursor)


@router.get("/alerts", response_model=AlertPage, summary="List alerts, newest first")
def list_alerts(conn: ReadConnDep, principal: Reader, site: SiteFilter = None,
                rule: Annotated[str | None, Query(examples=["hypoxia"])] = None,
                category: AlertCategory | None = None, severity: Severity | None = None,
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


def _alert_detail(conn: psycopg.Connection, alert_id: int, principal: Principal
                  ) -> AlertDetail:
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
def get_alert(alert_id: AlertId, conn: ReadConnDep, principal: Reader) -> AlertDetail:
    return _alert_detail(conn, alert_id, principal)


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertDetail,
             responses={**NOT_FOUND, 409: ERRORS[422] | {
                 "description": "the alert is closed or already acknowledged"}},
             summary="Acknowledge an open alert (operate scope)")
def acknowledge(alert_id: AlertId, body: Acknowledgement, conn: ConnDep,
                principal: Operator, request: Request) -> AlertDetail:
    """Records who acknowledged it and when (and in the audit log, from where); the
    detector still closes it when the condition clears. Needs the operator role (or the
    operate scope) on the alert's site: a site only granted for reading is not enough."""
    with conn.transaction():
        row = conn.execute("SELECT site_id, state, acknowledged_by FROM alerts WHERE id = %s "
                           "FOR UPDATE", (alert_id,)).fetchone()
        if row is None or not principal.may_see(row[0]):
            raise HTTPException(404, f"no alert {alert_id}")
        if not principal.may_act(Scope.OPERATE, row[0]):
            raise HTTPException(403, f"no operate right on site {row[0]} (read only)")
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
        audit.record(conn, actor=principal, action="alert.acknowledged",
                     target=f"alert:{alert_id}", site_id=row[0], before={"state": "open"},
                     after={"state": "acknowledged", "comment": comment},
                     source_address=client_address(request))
    return _alert_detail(conn, alert_id, principal)


ResponseId = Annotated[int, Path(ge=1, le=2**62)]


def suggested_response(conn: psycopg.Connection, row: responses.StoredResponse
                       ) -> SuggestedResponse:
    command = conn.execute("SELECT state FROM device_commands WHERE id = %s",
                           (row.command_id,)).fetchone()
    return SuggestedResponse(**dataclasses.asdict(row),
                             command_state=command[0] if command else None)


@router.get("/alerts/{alert_id}/responses", response_model=list[SuggestedResponse],
            responses=NOT_FOUND, summary="An alert's suggested responses")
def list_responses(alert_id: AlertId, conn: ReadConnDep, principal: Reader
                   ) -> list[SuggestedResponse]:
    row = conn.execute("SELECT site_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    if row is None or not principal.may_see(row[0]):
        raise HTTPException(404, f"no alert {alert_id}")
    return [suggested_response(conn, r) for r in responses.stored_responses(conn, alert_id)]


@router.post("/alerts/{alert_id}/responses/{response_id}/confirm",
             response_model=SuggestedResponse,
             responses={**NOT_FOUND, 409: ERRORS[422] | {
                 "description": "the alert is closed, or the response was superseded"}},
             summary="Run a suggested response: issue its command (operate right)")
def confirm_response(alert_id: AlertId, response_id: ResponseId, conn: ConnDep,
                     principal: Operator, request: Request) -> SuggestedResponse:
    """Issues the command an automatic run would (``set`` the actuator ``on`` for the
    suggested duration, expiring in 15 min), with the id fixed when it was suggested:
    confirming again answers the confirmed response and issues nothing more. Needs the
    operate right on the alert's site, as sending a command does."""
    with conn.transaction():
        row = conn.execute("SELECT site_id FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        if row is None or not principal.may_see(row[0]):
            raise HTTPException(404, f"no alert {alert_id}")
        before = responses.stored_response(conn, response_id)
        if before is None or before.alert_id != alert_id:
            raise HTTPException(404, f"no response {response_id} of alert {alert_id}")
        if not principal.may_act(Scope.OPERATE, row[0]):
            raise HTTPException(403, f"no operate right on site {row[0]} (read only)")
        try:
            done, issued = responses.confirm(conn, response_id, actor=principal.name,
                                             via="api")
        except responses.ConfirmRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except responses.ConfirmFailed as exc:
            raise HTTPException(422, str(exc)) from None
        if issued:
            audit.record(conn, actor=principal, action="alert.response_confirmed",
                         target=f"alert:{alert_id}", site_id=row[0],
                         before={"response": response_id, "state": before.state},
                         after={"response": response_id, "state": done.state,
                                "command": done.command_id, "device": done.device_id,
                                "actuator": done.actuator, "duration_s": done.duration_s},
                         source_address=client_address(request))
    return suggested_response(conn, done)
