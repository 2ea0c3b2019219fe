"""Notifications: contacts, groups and routes (CRUD, validated, audited), the delivery log,
and the acknowledge links messages carry.

Who may: everyone reads the contacts, groups and routes of their own organisations (a
platform admin: all) and the delivery log of the sites they see; an organisation's admins
change their organisation's. Another organisation's are "not found". A contact's URL
holds its channel's secrets: it is taken, never returned (answers show its scheme and
host). The acknowledge link needs no sign-in: its token is the right to acknowledge one
alert (or one incident) once, before it expires. A confirm link likewise is the right to
run one suggested response once, before it expires; only contacts of the organisation
owning the site get one.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from tidefield.server.detect import responses
from tidefield.server.notify import store
from tidefield.server.notify.routing import ContactIn, GroupIn, RouteIn
from tidefield.server.security import audit
from tidefield.server.security.api_keys import Principal, Scope
from tidefield.server.security.organisations import organisation_of_site
from tidefield.server.web.deps import ConnDep, ReadConnDep, Reader, client_address

from ..models import ERRORS, NOT_FOUND

router = APIRouter(prefix="/notifications", tags=["notifications"], responses={
    **ERRORS, **NOT_FOUND})

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
Kind = Literal["contacts", "groups", "routes"]
_TABLES = {"contacts": "notify_contacts", "groups": "notify_groups",
           "routes": "notify_routes"}
_LISTS = {"contacts": store.contacts, "groups": store.groups, "routes": store.routes}


class ContactBody(ContactIn):
    organisation_id: int | None = Field(None, description="default: the one you administer")


class GroupBody(GroupIn):
    organisation_id: int | None = None


class RouteBody(RouteIn):
    organisation_id: int | None = None


class Contact(BaseModel):
    id: int
    organisation_id: int
    name: str
    channel: str = Field(description="scheme and host of its URL (the rest is secret)")
    language: str
    quiet_hours: str | None
    timezone: str
    enabled: bool


class Group(BaseModel):
    id: int
    organisation_id: int
    name: str
    members: list[str]


class Route(BaseModel):
    id: int
    organisation_id: int
    name: str
    group_id: int
    group: str
    site_ids: list[str] | None
    kinds: list[str] | None
    districts: list[str] | None
    severities: list[str] | None
    categories: list[str] | None
    rules: list[str] | None
    tier: int
    escalate_after_minutes: float | None
    remind_every_minutes: float | None
    digest: str
    enabled: bool


class Attempt(BaseModel):
    attempt_id: int
    at: datetime
    ok: bool
    latency_ms: float
    error: str | None
    delivery_id: int
    key: str
    kind: str
    tier: int
    status: str
    alert_id: int | None
    incident_id: int | None
    site_id: str | None
    contact_id: int
    contact: str
    channel: str


class DeliveryPage(BaseModel):
    items: list[Attempt]
    next_cursor: str | None


# --- who may --------------------------------------------------------------------------

def _readable(principal: Principal) -> list[int] | None:
    return None if principal.platform_admin else sorted(principal.organisations)


def _administered(principal: Principal, wanted: int | None) -> int:
    """The organisation a change is for; 403 unless the caller administers it."""
    if not principal.may(Scope.ADMIN):
        raise HTTPException(403, "only an organisation's admins may change notifications")
    if wanted is None:
        if len(principal.admin_of) == 1:
            return next(iter(principal.admin_of))
        if principal.platform_admin and not principal.admin_of:
            return 1
        raise HTTPException(422, "organisation_id: say which organisation")
    if not (principal.platform_admin or wanted in principal.admin_of):
        raise HTTPException(403, f"you do not administer organisation {wanted}")
    return wanted


def _existing(conn: Any, kind: Kind, principal: Principal, item_id: int) -> dict[str, Any]:
    found = _LISTS[kind](conn, _readable(principal), item_id)
    if not found:
        raise HTTPException(404, f"no {kind[:-1]} {item_id}")
    return found[0]


def _check_sites(conn: Any, organisation_id: int, site_ids: list[str] | None) -> None:
    """A route names only its organisation's sites (the platform office: any)."""
    for site in site_ids or []:
        owner = organisation_of_site(conn, site)
        if owner is None or (organisation_id != 1 and owner != organisation_id):
            raise HTTPException(422, f"site_ids: {site} is not a site of organisation "
                                     f"{organisation_id}")


def _save(conn: Any, kind: Kind, principal: Principal, request: Request,
          body: ContactBody | GroupBody | RouteBody, item_id: int | None) -> dict[str, Any]:
    before = _existing(conn, kind, principal, item_id) if item_id is not None else None
    org = _administered(principal, before["organisation_id"] if before
                        else body.organisation_id)
    values = body.model_copy(update={"organisation_id": None})
    with conn.transaction():
        try:
            if isinstance(values, RouteBody):
                _check_sites(conn, org, values.site_ids)
                saved = store.save_route(conn, org, RouteIn(**values.model_dump(
                    exclude={"organisation_id"})), item_id)
            elif isinstance(values, GroupBody):
                saved = store.save_group(conn, org, GroupIn(**values.model_dump(
                    exclude={"organisation_id"})), item_id)
            else:
                saved = store.save_contact(conn, org, ContactIn.model_construct(
                    **values.model_dump(exclude={"organisation_id"})), item_id)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except LookupError:
            raise HTTPException(404, f"no {kind[:-1]} {item_id}") from None
        after = _LISTS[kind](conn, None, saved)[0]
        audit.record(conn, actor=principal, action=f"notify.{kind[:-1]}_"
                     f"{'changed' if before else 'created'}", target=f"notify_{kind[:-1]}:"
                     f"{saved}", before=_jsonable(before), after=_jsonable(after),
                     organisations=[org], source_address=client_address(request))
    return after


def _jsonable(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the audit row keeps: the answer's fields (never a URL: contacts have none)."""
    return None if item is None else {k: v for k, v in item.items() if k != "url"}


# --- contacts, groups, routes -------------------------------------------------------------

@router.get("/contacts", response_model=list[Contact], summary="Contacts (no secrets)")
def list_contacts(conn: ReadConnDep, principal: Reader) -> list[dict[str, Any]]:
    return store.contacts(conn, _readable(principal))


@router.post("/contacts", response_model=Contact, status_code=201,
             summary="Add a contact (admin); its URL is write-only")
def create_contact(body: ContactBody, conn: ConnDep, principal: Reader,
                   request: Request) -> dict[str, Any]:
    return _save(conn, "contacts", principal, request, body, None)


@router.put("/contacts/{item_id}", response_model=Contact, summary="Replace a contact")
def replace_contact(item_id: Id, body: ContactBody, conn: ConnDep, principal: Reader,
                    request: Request) -> dict[str, Any]:
    return _save(conn, "contacts", principal, request, body, item_id)


@router.get("/groups", response_model=list[Group], summary="Groups of contacts")
def list_groups(conn: ReadConnDep, principal: Reader) -> list[dict[str, Any]]:
    return store.groups(conn, _readable(principal))


@router.post("/groups", response_model=Group, status_code=201, summary="Add a group")
def create_group(body: GroupBody, conn: ConnDep, principal: Reader,
                 request: Request) -> dict[str, Any]:
    return _save(conn, "groups", principal, request, body, None)


@router.put("/groups/{item_id}", response_model=Group, summary="Replace a group")
def replace_group(item_id: Id, body: GroupBody, conn: ConnDep, principal: Reader,
                  request: Request) -> dict[str, Any]:
    return _save(conn, "groups", principal, request, body, item_id)


@router.get("/routes", response_model=list[Route], summary="Routes: which alerts go where")
def list_routes(conn: ReadConnDep, principal: Reader) -> list[dict[str, Any]]:
    return store.routes(conn, _readable(principal))


@router.post("/routes", response_model=Route, status_code=201, summary="Add a route")
def create_route(body: RouteBody, conn: ConnDep, principal: Reader,
                 request: Request) -> dict[str, Any]:
    return _save(conn, "routes", principal, request, body, None)


@router.put("/routes/{item_id}", response_model=Route, summary="Replace a route")
def replace_route(item_id: Id, body: RouteBody, conn: ConnDep, principal: Reader,
                  request: Request) -> dict[str, Any]:
    return _save(conn, "routes", principal, request, body, item_id)


@router.delete("/{kind}/{item_id}", status_code=204,
               summary="Remove a contact, group or route (admin)")
def remove(kind: Kind, item_id: Id, conn: ConnDep, principal: Reader,
           request: Request) -> None:
    before = _existing(conn, kind, principal, item_id)
    org = _administered(principal, before["organisation_id"])
    with conn.transaction():
        store.delete(conn, _TABLES[kind], [org], item_id)
        audit.record(conn, actor=principal, action=f"notify.{kind[:-1]}_deleted",
                     target=f"notify_{kind[:-1]}:{item_id}", before=_jsonable(before),
                     organisations=[org], source_address=client_address(request))


# --- incidents ----------------------------------------------------------------------------

class IncidentAlert(BaseModel):
    id: int
    site_id: str
    state: str
    severity: str
    acknowledged_by: str | None


class Incident(BaseModel):
    id: int
    rule: str
    opened_at: datetime
    joined_at: datetime
    alerts: list[IncidentAlert]


class IncidentAcknowledgement(BaseModel):
    comment: str = Field("", max_length=2000)


@router.get("/incidents", response_model=list[Incident],
            summary="Open incidents (alerts of one rule opening close in time and space)")
def list_incidents(conn: ReadConnDep, principal: Reader) -> list[dict[str, Any]]:
    return store.incidents(conn, sites=principal.site_list)


@router.post("/incidents/{incident_id}/acknowledge", response_model=Incident,
             summary="Acknowledge an incident's open alerts (those on sites you operate)")
def acknowledge_incident(incident_id: Annotated[int, Path(ge=1, le=2**62)],
                         body: IncidentAcknowledgement, conn: ConnDep, principal: Reader,
                         request: Request) -> dict[str, Any]:
    with conn.transaction():
        found = store.incidents(conn, sites=principal.site_list, incident_id=incident_id)
        if not found:
            raise HTTPException(404, f"no incident {incident_id}")
        mine = [a["id"] for a in found[0]["alerts"] if a["state"] == "open"
                and principal.may_act(Scope.OPERATE, a["site_id"])]
        if not mine:
            raise HTTPException(403 if any(a["state"] == "open" for a in found[0]["alerts"])
                                else 409, "no open alert of it that you may acknowledge")
        comment = body.comment.strip() or None
        for alert_id, site_id in store.acknowledge_alerts(
                conn, mine, who=principal.name, comment=comment, via="dashboard/API"):
            audit.record(conn, actor=principal, action="alert.acknowledged",
                         target=f"alert:{alert_id}", site_id=site_id,
                         before={"state": "open"},
                         after={"state": "acknowledged", "incident": incident_id,
                                "comment": comment},
                         source_address=client_address(request))
    return store.incidents(conn, sites=principal.site_list, incident_id=incident_id)[0]


# --- the delivery log ---------------------------------------------------------------------

@router.get("/deliveries", response_model=DeliveryPage,
            summary="The delivery log: each attempt, newest first")
def deliveries(conn: ReadConnDep, principal: Reader,
               alert_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               cursor: Annotated[str | None, Query(pattern=r"^\d{1,18}$")] = None
               ) -> DeliveryPage:
    rows = store.delivery_log(conn, sites=principal.site_list,
                              organisations=_readable(principal), alert_id=alert_id,
                              limit=limit + 1, before=int(cursor) if cursor else None)
    items = [Attempt(**row) for row in rows[:limit]]
    return DeliveryPage(items=items, next_cursor=str(items[-1].attempt_id)
                        if len(rows) > limit else None)


# --- acknowledge from the phone -----------------------------------------------------------

_REFUSED = {"unknown": (404, "This link is not one we sent."),
            "used": (410, "This link was used already."),
            "expired": (410, "This link has expired.")}


def _page(status: int, title: str, text: str, form: str = "") -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(text)}</p>{form}", status_code=status)


Token = Annotated[str, Path(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


@router.get("/ack/{token}", response_class=HTMLResponse, include_in_schema=False)
def ack_page(token: Token, conn: ReadConnDep) -> HTMLResponse:
    """A page with one button: link previews (chat apps fetch links) must not acknowledge."""
    found = store.token_alert(conn, token)
    if found is None:
        return _page(404, "Not found", _REFUSED["unknown"][1])
    alert_id, site_id, state = found
    return _page(200, f"Alert {alert_id} at {site_id}", f"state: {state}",
                 "<form method=post><button type=submit>Acknowledge / 确认</button></form>")


@router.post("/ack/{token}", summary="Acknowledge through a message's link (no sign-in)",
             responses={410: ERRORS[422] | {"description": "used or expired"}},
             response_class=HTMLResponse)
def ack(token: Token, conn: ConnDep, request: Request) -> HTMLResponse:
    with conn.transaction():
        try:
            done = store.redeem(conn, token, datetime.now(UTC))
        except store.TokenRefused as refused:
            status, text = _REFUSED[refused.reason]
            return _page(status, "Refused", text)
        for alert_id, site_id in zip(done.alert_ids, done.site_ids, strict=True):
            audit.record(conn, actor=done.contact, action="alert.acknowledged",
                         target=f"alert:{alert_id}", site_id=site_id,
                         before={"state": "open"},
                         after={"state": "acknowledged", "via": done.channel},
                         source_address=client_address(request))
    if not done.alert_ids:
        return _page(409, "Nothing to acknowledge", "The alert is no longer open.")
    return _page(200, "Acknowledged", f"{len(done.alert_ids)} alert(s) acknowledged as "
                                      f"{done.contact} through {done.channel}.")


# --- confirm a suggested response from the phone -----------------------------------------

@router.get("/confirm/{token}", response_class=HTMLResponse, include_in_schema=False)
def confirm_page(token: Token, conn: ReadConnDep) -> HTMLResponse:
    """A page with one button, as for acknowledging: a link preview must not run an aerator."""
    response_id = store.token_response(conn, token)
    found = responses.stored_response(conn, response_id) if response_id is not None else None
    if found is None:
        return _page(404, "Not found", _REFUSED["unknown"][1])
    return _page(200, f"Suggested for alert {found.alert_id} at {found.site_id}",
                 f"{found.what} ({found.state})",
                 "<form method=post><button type=submit>Run suggested action / 执行建议操作"
                 "</button></form>")


@router.post("/confirm/{token}", summary="Run a suggested response through a message's link "
             "(no sign-in)", responses={410: ERRORS[422] | {"description": "used or expired"},
                                        409: ERRORS[422] | {"description": "alert closed"}},
             response_class=HTMLResponse)
def confirm(token: Token, conn: ConnDep, request: Request) -> HTMLResponse:
    with conn.transaction():
        try:
            right = store.redeem_confirm(conn, token, datetime.now(UTC))
        except store.TokenRefused as refused:
            status, text = _REFUSED[refused.reason]
            return _page(status, "Refused", text)
        try:
            with conn.transaction():  # a refusal below still spends the token
                done, issued = responses.confirm(conn, right.response_id,
                                                 actor=right.contact, via=right.channel)
                if issued:
                    audit.record(conn, actor=right.contact,
                                 action="alert.response_confirmed",
                                 target=f"alert:{done.alert_id}", site_id=done.site_id,
                                 before={"response": done.id, "state": "suggested"},
                                 after={"response": done.id, "state": done.state,
                                        "command": done.command_id, "via": right.channel,
                                        "device": done.device_id, "actuator": done.actuator,
                                        "duration_s": done.duration_s},
                                 source_address=client_address(request))
        except (responses.ConfirmRefused, responses.ConfirmFailed) as exc:
            return _page(409, "Not run", str(exc))
    return _page(200, "Suggested action run" if issued else "Already run",
                 f"{done.what}: command {done.command_id}, confirmed by {done.confirmed_by}.")
