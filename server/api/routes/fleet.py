"""Running the fleet from the product: sites and devices created, edited, moved and
retired; device broker logins handed out once (with the agent's config file) and
revoked; the registry CSV exported and imported; maintenance windows; device health.

Who may: the admins of a site's organisation change its sites and devices
(``Principal.may_act(Scope.ADMIN, site)``); an operator puts a site or device in
maintenance (``Scope.OPERATE``); readers see health and windows of what they may read.
Every change writes one audit row with what it was before and after. Another
organisation's site is "not found" when the caller may not read it, 403 when they may
read it only.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import yaml
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.registry import RegistryError, parse_sites, sites_csv
from tidefield.server.db import fleet, maintenance
from tidefield.server.security import audit
from tidefield.server.security.accounts import ProvisioningError, provision_device, revoke
from tidefield.server.security.api_keys import Principal, Scope
from tidefield.server.security.dynsec import BrokerAccess
from tidefield.server.web.deps import (
    Admin,
    ConnDep,
    Operator,
    ReadConnDep,
    Reader,
    check_site,
    client_address,
)

from ..models import ERRORS, NOT_FOUND
from ..query_params import aware, time_range
from .devices import SILENT_INTERVALS, STATE_SQL

log = logging.getLogger(__name__)

router = APIRouter(tags=["fleet"], responses={
    **ERRORS, **NOT_FOUND,
    409: ERRORS[422] | {"description": "it conflicts with what exists (an id taken, "
                                       "retired already, another organisation's site)"}})

SiteId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
DeviceId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
IdText = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
# what the agent config names as the CA file; the CA itself comes beside it
AGENT_CA_PATH = "/etc/tidefield/broker-ca.pem"
MAX_IMPORT_BYTES = 2_000_000


# --- models ---------------------------------------------------------------------------------

class SiteFields(BaseModel):
    id: IdText
    name_zh: Annotated[str, Field(min_length=1, max_length=200)]
    name_en: Annotated[str, Field(min_length=1, max_length=200)]
    kind: Annotated[str, Field(examples=["cage_farm"])]
    domain: Annotated[str, Field(examples=["ocean"])]
    district: Annotated[str, Field(examples=["huangdao"])]
    lat: float
    lon: float


class NewSite(SiteFields):
    organisation_id: Annotated[int | None, Field(
        ge=1, le=2**31 - 1, description="owner (you must administer it); default: the "
                                        "one organisation you administer")] = None
    with_devices: bool = Field(True, description="also create a device of every template "
                                                 "of its kind, as `registry load` does")


class SiteChange(BaseModel):
    name_zh: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    name_en: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    district: str | None = None
    lat: float | None = None
    lon: float | None = None
    kind: str | None = Field(None, description="refused: a site's kind decides its devices")


class FleetSite(SiteFields):
    organisation_id: int
    retired: bool
    devices: list[str]


class NewDevice(BaseModel):
    site_id: IdText
    template: Annotated[str, Field(examples=["sonde"], description="one of the site "
                                   "kind's templates (protocol/catalog.py)")]
    id: IdText | None = Field(None, description="default: {site_id}-{template}")


class DeviceChange(BaseModel):
    model: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    interval_s: Annotated[int | None, Field(ge=1, le=86_400)] = None


class DeviceMove(BaseModel):
    site_id: IdText


class FleetDevice(BaseModel):
    id: str
    site_id: str
    template: str
    model: str
    interval_s: int
    retired: bool


class Provisioned(BaseModel):
    username: str
    password: str = Field(description="shown once: only its hash is kept")
    broker_url: str
    agent_config: str = Field(description="the agent's config file (YAML), with this login")
    ca_pem: str | None = Field(description="the CA the broker's certificate is signed by "
                                           "(save as " + AGENT_CA_PATH + "), when TLS is on")
    broker_updated: bool = Field(description="the running broker took the login at once")


class Revoked(BaseModel):
    username: str
    revoked: int


class ImportResult(BaseModel):
    created: list[str]
    updated: list[str]


class NewWindow(BaseModel):
    site_id: IdText
    device_id: IdText | None = Field(None, description="none: the whole site")
    starts_at: datetime | None = Field(None, description="default: now")
    ends_at: datetime
    reason: Annotated[str, Field(max_length=500)] = ""


class WindowOut(BaseModel):
    id: int
    site_id: str
    device_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    active: bool


class DeviceHealth(BaseModel):
    device_id: str
    site_id: str
    template: str
    model: str
    state: Literal["online", "offline", "unknown"]
    last_seen: datetime | None
    battery_v: float | None = Field(description="its own, else its site's gateway's")
    signal_dbm: float | None = Field(description="its own, else its site's gateway's")
    missing_batches: int = Field(description="sequence numbers never received")
    clock_offset_s: float | None = Field(
        description="arrival of its last message minus the newest reading time it sent: "
                    "a clock wrong by minutes shows here (plus its batching delay)")
    login: Literal["active", "revoked", "none"] = Field(
        description="its broker login (configuration state)")
    open_faults: int
    in_maintenance: bool
    agent_version: str | None = Field(
        None, description="the release of the edge agent that speaks for it (its own, else "
                          "its site's gateway's), as the agent last reported it")
    config: Literal["default", "applied", "pending", "refused"] = Field(
        "default", description="its configuration twin: no desired version set, the desired "
                               "version reported back, not yet reported, or refused")
    config_error: str | None = Field(None, description="why the device refused it")
    visit_score: int = Field(description="higher: needs a visit sooner")
    reasons: list[str]


# --- helpers --------------------------------------------------------------------------------

def _site_or_404(conn: ConnDep, principal: Principal, site_id: str
                 ) -> tuple[Any, int, bool]:
    found = fleet.get_site(conn, site_id)
    if found is None or not principal.may_see(site_id):
        raise HTTPException(404, f"no site {site_id!r}")
    return found


def _admin_of_site(principal: Principal, site_id: str) -> None:
    if not principal.may_act(Scope.ADMIN, site_id):
        raise HTTPException(403, f"only admins of site {site_id}'s organisation may change "
                                 f"it (you may read it only)")


def _device_or_404(conn: ConnDep, principal: Principal, device_id: str) -> fleet.DeviceRow:
    device = fleet.get_device(conn, device_id)
    if device is None or not principal.may_see(device.site_id):
        raise HTTPException(404, f"no device {device_id!r}")
    return device


def _refused(exc: fleet.FleetError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


def _fleet_site(conn: ConnDep, site_id: str) -> FleetSite:
    found = fleet.get_site(conn, site_id)
    assert found is not None  # the caller found or made it
    site, organisation_id, retired = found
    devices = [r[0] for r in conn.execute("SELECT id FROM devices WHERE site_id = %s "
                                          "ORDER BY id", (site_id,))]
    return FleetSite(**fleet.site_dict(site), organisation_id=organisation_id,
                     retired=retired, devices=devices)


def _fleet_device(device: fleet.DeviceRow) -> FleetDevice:
    return FleetDevice(id=device.id, **device.as_dict())


def _owner_for_new_site(principal: Principal, organisation_id: int | None) -> int:
    if organisation_id is not None:
        if not (principal.platform_admin or organisation_id in principal.admin_of):
            raise HTTPException(403, f"you do not administer organisation {organisation_id}")
        return organisation_id
    if len(principal.admin_of) == 1:
        return next(iter(principal.admin_of))
    if not principal.admin_of:
        raise HTTPException(403, "only an organisation's admins may create sites")
    raise HTTPException(422, "you administer several organisations: give organisation_id")


def _sync_broker(request: Request, conn: ConnDep, fresh: Any = None) -> bool:
    """Make the broker's logins what the database says; True when the running broker took
    them (else it reads its file when it starts). A broker out of reach is no error: the
    database is the truth, and `tidefield devices sync` applies it later."""
    access: BrokerAccess = request.app.state.broker_access
    try:
        result = access.sync(conn, fresh)
    except OSError as exc:
        log.warning("broker access not written: %s", exc)
        return False
    for problem in result.problems:
        log.warning("broker access: %s", problem)
    return result.live


def _audit(conn: ConnDep, request: Request, principal: Principal, action: str, target: str,
           *, site_id: str, before: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None, organisations: list[int] | None = None
           ) -> None:
    audit.record(conn, actor=principal, action=action, target=target, site_id=site_id,
                 before=before, after=after, organisations=organisations or (),
                 source_address=client_address(request))


# --- sites ------------------------------------------------------------------------------------

@router.post("/fleet/sites", response_model=FleetSite, status_code=201,
             summary="Create a site (admins of its organisation)")
def create_site(body: NewSite, request: Request, conn: ConnDep,
                principal: Admin) -> FleetSite:
    owner = _owner_for_new_site(principal, body.organisation_id)
    fields = body.model_dump(include=set(fleet.SITE_COLUMNS))
    with conn.transaction():
        try:
            site = fleet.create_site(conn, fields, organisation_id=owner,
                                     with_devices=body.with_devices)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        out = _fleet_site(conn, site.id)
        _audit(conn, request, principal, "site.created", f"site:{site.id}", site_id=site.id,
               after=out.model_dump())
    return out


@router.patch("/fleet/sites/{site_id}", response_model=FleetSite,
              summary="Change a site's names, district or position")
def edit_site(site_id: SiteId, body: SiteChange, request: Request, conn: ConnDep,
              principal: Admin) -> FleetSite:
    _site_or_404(conn, principal, site_id)
    _admin_of_site(principal, site_id)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise HTTPException(422, "nothing to change: give name_zh, name_en, district, lat "
                                 "or lon")
    with conn.transaction():
        try:
            before, after = fleet.edit_site(conn, site_id, changes)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        _audit(conn, request, principal, "site.changed", f"site:{site_id}", site_id=site_id,
               before=fleet.site_dict(before), after=fleet.site_dict(after))
    return _fleet_site(conn, site_id)


@router.post("/fleet/sites/{site_id}/retire", response_model=FleetSite,
             summary="Retire a site and its devices (history kept, no data expected)")
def retire_site(site_id: SiteId, request: Request, conn: ConnDep,
                principal: Admin) -> FleetSite:
    _site_or_404(conn, principal, site_id)
    _admin_of_site(principal, site_id)
    with conn.transaction():
        try:
            devices = fleet.retire_site(conn, site_id)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        revoked = [d for d in devices if revoke_in_transaction(conn, d)]
        _audit(conn, request, principal, "site.retired", f"site:{site_id}", site_id=site_id,
               before={"retired": False},
               after={"retired": True, "devices": devices, "logins_revoked": revoked})
    if revoked:
        _sync_broker(request, conn)
    return _fleet_site(conn, site_id)


@router.get("/fleet/registry.csv", response_class=PlainTextResponse,
            responses={200: {"content": {"text/csv": {}},
                             "description": "id,name_zh,name_en,kind,domain,district,lat,lon"}},
            summary="The sites you may read, as a sites.csv (`registry load --sites`)")
def export_registry(conn: ReadConnDep, principal: Reader) -> PlainTextResponse:
    sites = [s for s in fleet.organisation_sites(conn, None) if principal.may_see(s.id)]
    return PlainTextResponse(sites_csv(sites), media_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="sites.csv"'})


@router.post("/fleet/registry", response_model=ImportResult,
             summary="Import a sites.csv: its sites, their devices and series",
             openapi_extra={"requestBody": {"content": {"text/csv": {}}, "required": True}})
async def import_registry(request: Request, conn: ConnDep, principal: Admin,
                          organisation_id: Annotated[int | None, Query(ge=1)] = None
                          ) -> ImportResult:
    owner = _owner_for_new_site(principal, organisation_id)
    body = await request.body()
    if len(body) > MAX_IMPORT_BYTES:
        raise HTTPException(413, f"a registry file may hold at most {MAX_IMPORT_BYTES} bytes")
    try:
        sites = list(parse_sites(body.decode("utf-8-sig"), source="the uploaded file"))
    except UnicodeDecodeError:
        raise HTTPException(422, "the file is not UTF-8 text") from None
    except RegistryError as exc:
        raise HTTPException(422, str(exc)) from None
    taken = [s.id for s in sites if fleet.get_site(conn, s.id) is not None
             and not principal.may_act(Scope.ADMIN, s.id)]
    readable = [site_id for site_id in taken if principal.may_see(site_id)]
    if readable:
        raise HTTPException(409, f"sites you do not administer: {', '.join(readable[:10])}")
    if taken:  # ids of sites the caller may not read: say so without naming them
        raise HTTPException(409, f"{len(taken)} site id(s) of the file are taken by another "
                                 f"organisation's sites")
    with conn.transaction():
        try:
            created, updated = fleet.import_sites(conn, sites, organisation_id=owner)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        audit.record(conn, actor=principal, action="registry.imported",
                     target=f"organisation:{owner}", organisations=[owner],
                     after={"created": created, "updated": updated},
                     source_address=client_address(request))
    return ImportResult(created=created, updated=updated)


# --- devices ----------------------------------------------------------------------------------

@router.post("/fleet/devices", response_model=FleetDevice, status_code=201,
             summary="Add a device of one of its site's templates")
def create_device(body: NewDevice, request: Request, conn: ConnDep,
                  principal: Admin) -> FleetDevice:
    _site_or_404(conn, principal, body.site_id)
    _admin_of_site(principal, body.site_id)
    with conn.transaction():
        try:
            device = fleet.create_device(conn, body.site_id, body.template, body.id)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        _audit(conn, request, principal, "device.created", f"device:{device.id}",
               site_id=device.site_id, after=device.as_dict())
    return _fleet_device(device)


@router.patch("/fleet/devices/{device_id}", response_model=FleetDevice,
              summary="Change a device's model or interval")
def edit_device(device_id: DeviceId, body: DeviceChange, request: Request, conn: ConnDep,
                principal: Admin) -> FleetDevice:
    device = _device_or_404(conn, principal, device_id)
    _admin_of_site(principal, device.site_id)
    if not body.model_dump(exclude_unset=True):
        raise HTTPException(422, "nothing to change: give model or interval_s")
    with conn.transaction():
        before, after = fleet.edit_device(conn, device_id, model=body.model,
                                          interval_s=body.interval_s)
        _audit(conn, request, principal, "device.changed", f"device:{device_id}",
               site_id=device.site_id, before=before.as_dict(), after=after.as_dict())
    return _fleet_device(after)


@router.post("/fleet/devices/{device_id}/move", response_model=FleetDevice,
             summary="Move a device (its series and history) to another site of yours")
def move_device(device_id: DeviceId, body: DeviceMove, request: Request, conn: ConnDep,
                principal: Admin) -> FleetDevice:
    device = _device_or_404(conn, principal, device_id)
    _admin_of_site(principal, device.site_id)
    if not principal.may_see(body.site_id):
        raise HTTPException(404, f"no site {body.site_id!r}")
    with conn.transaction():
        try:
            before, after = fleet.move_device(conn, device_id, body.site_id)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        _admin_of_site(principal, body.site_id)
        _audit(conn, request, principal, "device.moved", f"device:{device_id}",
               site_id=after.site_id, before=before.as_dict(), after=after.as_dict())
    # the broker's rules name the site in each topic: a login follows its device
    _sync_broker(request, conn)
    return _fleet_device(after)


@router.post("/fleet/devices/{device_id}/retire", response_model=FleetDevice,
             summary="Retire a device (history kept, no data expected, login revoked)")
def retire_device(device_id: DeviceId, request: Request, conn: ConnDep,
                  principal: Admin) -> FleetDevice:
    device = _device_or_404(conn, principal, device_id)
    _admin_of_site(principal, device.site_id)
    with conn.transaction():
        try:
            before = fleet.retire_device(conn, device_id)
        except fleet.FleetError as exc:
            raise _refused(exc) from None
        revoked = revoke_in_transaction(conn, device_id)
        after = fleet.get_device(conn, device_id)
        assert after is not None
        _audit(conn, request, principal, "device.retired", f"device:{device_id}",
               site_id=device.site_id, before=before.as_dict(),
               after={**after.as_dict(), "login_revoked": revoked})
    if revoked:
        _sync_broker(request, conn)
    return _fleet_device(after)


def revoke_in_transaction(conn: ConnDep, device_id: str) -> bool:
    """Revoke the device's active login inside the caller's transaction."""
    return conn.execute("UPDATE mqtt_credentials SET revoked_at = now() WHERE username = %s "
                        "AND device_id IS NOT NULL AND revoked_at IS NULL",
                        (device_id,)).rowcount > 0


def _device_broker_url(request: Request) -> str:
    return str(request.app.state.device_broker_url or "mqtt://BROKER-HOST:1883")


def _agent_config(site_id: str, username: str, password: str, broker_url: str,
                  with_ca: bool) -> str:
    broker: dict[str, Any] = {"url": broker_url, "username": username, "password": password}
    if with_ca and broker_url.startswith("mqtts://"):
        broker["ca_file"] = AGENT_CA_PATH
    header = (f"# Tidefield edge agent for {site_id}, written by the API when {username}'s\n"
              f"# login was made. The password is in it: keep the file readable by the\n"
              f"# agent only (chmod 600). Add drivers (deploy/edge.yaml has a sample), then:\n"
              f"#   python -m tidefield.edge check --config edge.yaml\n")
    body = {"site": site_id, "broker": broker, "drivers": []}
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


@router.post("/fleet/devices/{device_id}/credentials", response_model=Provisioned,
             status_code=201,
             summary="Make the device's broker login; the password is shown once")
def provision(device_id: DeviceId, request: Request, conn: ConnDep, principal: Admin,
              rotate: Annotated[bool, Query(description="replace an existing login")] = False
              ) -> Provisioned:
    device = _device_or_404(conn, principal, device_id)
    _admin_of_site(principal, device.site_id)
    if device.retired:
        raise HTTPException(409, f"device {device_id} is retired")
    try:
        credentials = provision_device(conn, device.site_id, device_id, rotate=rotate)
    except ProvisioningError as exc:
        raise HTTPException(409, f"{exc}".replace("pass --rotate", "ask with rotate=true")
                            ) from None
    _audit(conn, request, principal, "device.provisioned", f"device:{device_id}",
           site_id=device.site_id, after={"username": credentials.username,
                                          "rotated": rotate})
    conn.commit()
    live = _sync_broker(request, conn, credentials)
    ca_file = request.app.state.agent_ca_file
    ca_pem = FilePath(ca_file).read_text() if ca_file else None
    url = _device_broker_url(request)
    return Provisioned(username=credentials.username, password=credentials.password,
                       broker_url=url, ca_pem=ca_pem, broker_updated=live,
                       agent_config=_agent_config(device.site_id, credentials.username,
                                                  credentials.password, url,
                                                  ca_pem is not None))


@router.delete("/fleet/devices/{device_id}/credentials", response_model=Revoked,
               summary="Revoke the device's broker login; a client using it is cut off")
def revoke_login(device_id: DeviceId, request: Request, conn: ConnDep,
                 principal: Admin) -> Revoked:
    device = _device_or_404(conn, principal, device_id)
    _admin_of_site(principal, device.site_id)
    count = revoke(conn, device_id)
    if not count:
        raise HTTPException(409, f"device {device_id} has no active login")
    _audit(conn, request, principal, "device.revoked", f"device:{device_id}",
           site_id=device.site_id, before={"login": "active"}, after={"login": "revoked"})
    conn.commit()
    _sync_broker(request, conn)
    return Revoked(username=device_id, revoked=count)


# --- maintenance ------------------------------------------------------------------------------

def _window_out(window: maintenance.Window) -> WindowOut:
    now = datetime.now(UTC)
    return WindowOut(id=window.id, site_id=window.site_id, device_id=window.device_id,
                     starts_at=window.starts_at, ends_at=window.ends_at, reason=window.reason,
                     created_by=window.created_by,
                     active=window.starts_at <= now < window.ends_at)


def _may_operate(principal: Principal, site_id: str) -> None:
    if not principal.may_act(Scope.OPERATE, site_id):
        raise HTTPException(403, f"no operate right on site {site_id} (you may read it only)")


@router.post("/maintenance", response_model=WindowOut, status_code=201,
             summary="Put a site or a device in maintenance for a period (operators)")
def create_window(body: NewWindow, request: Request, conn: ConnDep,
                  principal: Operator) -> WindowOut:
    _site_or_404(conn, principal, body.site_id)
    _may_operate(principal, body.site_id)
    if body.device_id is not None:
        device = fleet.get_device(conn, body.device_id)
        if device is None or device.site_id != body.site_id:
            raise HTTPException(404, f"no device {body.device_id!r} at site {body.site_id}")
    starts = aware(body.starts_at, "starts_at") if body.starts_at else datetime.now(UTC)
    ends = aware(body.ends_at, "ends_at")
    if ends <= starts:
        raise HTTPException(422, "ends_at must be after starts_at")
    if ends - starts > timedelta(days=maintenance.MAX_WINDOW_DAYS):
        raise HTTPException(422, f"a maintenance window lasts at most "
                                 f"{maintenance.MAX_WINDOW_DAYS} days")
    with conn.transaction():
        window = maintenance.create_window(
            conn, site_id=body.site_id, device_id=body.device_id, starts_at=starts,
            ends_at=ends, reason=body.reason, created_by=principal.name)
        out = _window_out(window)
        _audit(conn, request, principal, "maintenance.started",
               f"maintenance:{window.id}", site_id=body.site_id,
               after=out.model_dump(mode="json"))
    return out


@router.get("/maintenance", response_model=list[WindowOut],
            summary="Maintenance windows overlapping a period")
def list_windows(conn: ReadConnDep, principal: Reader,
                 site: Annotated[str | None, Query(examples=["oc-001"])] = None,
                 start: datetime | None = None, end: datetime | None = None
                 ) -> list[WindowOut]:
    start, end = time_range(start, end, default=timedelta(days=30))
    if site is not None:
        check_site(principal, site)
    sites = [site] if site is not None else principal.site_list
    return [_window_out(w) for w in maintenance.windows(conn, sites=sites, since=start,
                                                        until=end)]


@router.post("/maintenance/{window_id}/end", response_model=WindowOut,
             summary="End a maintenance window now")
def end_window(window_id: Annotated[int, Path(ge=1, le=2**62)], request: Request,
               conn: ConnDep, principal: Operator) -> WindowOut:
    window = maintenance.get_window(conn, window_id)
    if window is None or not principal.may_see(window.site_id):
        raise HTTPException(404, f"no maintenance window {window_id}")
    _may_operate(principal, window.site_id)
    now = datetime.now(UTC)
    if window.ends_at <= now:
        raise HTTPException(409, f"maintenance window {window_id} has ended already")
    with conn.transaction():
        ended = maintenance.end_window(conn, window_id, now)
        _audit(conn, request, principal, "maintenance.ended", f"maintenance:{window_id}",
               site_id=window.site_id,
               before={"ends_at": window.ends_at.isoformat()},
               after={"ends_at": ended.ends_at.isoformat()})
    return _window_out(ended)


# --- health -----------------------------------------------------------------------------------

_HEALTH_SQL = f"""
SELECT d.id, d.site_id, d.template, d.model, {STATE_SQL}, st.last_seen,
       (SELECT r.value FROM series x JOIN devices g ON g.id = x.device_id
          CROSS JOIN LATERAL (SELECT value FROM readings WHERE series_id = x.id
                              ORDER BY time DESC LIMIT 1) r
        WHERE x.metric = 'battery_voltage' AND g.site_id = d.site_id
          AND (g.id = d.id OR g.template = 'gw') ORDER BY g.id = d.id DESC LIMIT 1),
       (SELECT r.value FROM series x JOIN devices g ON g.id = x.device_id
          CROSS JOIN LATERAL (SELECT value FROM readings WHERE series_id = x.id
                              ORDER BY time DESC LIMIT 1) r
        WHERE x.metric = 'signal_rssi' AND g.site_id = d.site_id
          AND (g.id = d.id OR g.template = 'gw') ORDER BY g.id = d.id DESC LIMIT 1),
       coalesce(st.max_seq - st.min_seq + 1 - st.batches, 0),
       extract(epoch FROM st.last_seen - st.last_reading)::float8,
       CASE WHEN EXISTS (SELECT 1 FROM mqtt_credentials c WHERE c.device_id = d.id
                         AND c.revoked_at IS NULL) THEN 'active'
            WHEN EXISTS (SELECT 1 FROM mqtt_credentials c WHERE c.device_id = d.id)
                 THEN 'revoked' ELSE 'none' END,
       (SELECT count(*) FROM alerts a WHERE a.device_id = d.id AND a.category = 'fault'
          AND a.state <> 'closed'),
       EXISTS (SELECT 1 FROM maintenance_windows w WHERE w.site_id = d.site_id
               AND (w.device_id IS NULL OR w.device_id = d.id)
               AND now() >= w.starts_at AND now() < w.ends_at),
       (SELECT g.agent_version FROM device_config g JOIN devices gd ON gd.id = g.device_id
        WHERE gd.site_id = d.site_id AND g.agent_version IS NOT NULL
          AND (gd.id = d.id OR gd.template = 'gw') ORDER BY gd.id = d.id DESC LIMIT 1),
       CASE WHEN cfg.desired_version IS NULL THEN 'default'
            WHEN cfg.reported_version IS NOT DISTINCT FROM cfg.desired_version THEN 'applied'
            WHEN cfg.reported_error IS NOT NULL THEN 'refused'
            ELSE 'pending' END,
       cfg.reported_error
FROM devices d JOIN sites si ON si.id = d.site_id
LEFT JOIN device_status st ON st.device_id = d.id
LEFT JOIN device_config cfg ON cfg.device_id = d.id
WHERE d.retired_at IS NULL
  AND (%(site)s::text IS NULL OR d.site_id = %(site)s)
  AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
"""

# how much each finding weighs in "needs a visit": silence first, then what a technician
# fixes on site (faults, power, antenna), then what only degrades the data
CLOCK_OFFSET_LIMIT_S = 300.0


def visit_priority(row: DeviceHealth) -> tuple[int, list[str]]:
    """A device's score (higher: visit sooner) and the reasons, in order of weight."""
    score, reasons = 0, list[str]()
    if row.state == "offline":
        score, reasons = score + 100, [*reasons, "offline"]
    elif row.state == "unknown":
        score, reasons = score + 30, [*reasons, "never heard from"]
    if row.open_faults:
        score += 40 * row.open_faults
        reasons.append(f"{row.open_faults} open sensor fault(s)")
    battery_low = METRICS["battery_voltage"].typical[0]
    if row.battery_v is not None and row.battery_v < battery_low:
        score += 30
        reasons.append(f"battery {row.battery_v:.2f} V (< {battery_low} V)")
    signal_weak = METRICS["signal_rssi"].typical[0]
    if row.signal_dbm is not None and row.signal_dbm < signal_weak:
        score += 15
        reasons.append(f"signal {row.signal_dbm:.0f} dBm (< {signal_weak} dBm)")
    if row.missing_batches > 0:
        score += min(row.missing_batches, 20)
        reasons.append(f"{row.missing_batches} batch(es) lost")
    if row.clock_offset_s is not None and abs(row.clock_offset_s) > CLOCK_OFFSET_LIMIT_S:
        score += 10
        reasons.append(f"clock off by {row.clock_offset_s:.0f} s")
    if row.config == "refused":  # the agent runs an older configuration than wanted
        score += 10
        reasons.append(f"configuration refused: {row.config_error}")
    if row.login == "none":
        reasons.append("no broker login yet")
    if row.in_maintenance:  # someone is there already
        score //= 4
        reasons.append("in maintenance")
    return score, reasons


@router.get("/fleet/health", response_model=list[DeviceHealth],
            summary="Devices in service with what needs a visit first")
def health(conn: ReadConnDep, principal: Reader,
           site: Annotated[str | None, Query(examples=["oc-001"])] = None,
           limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[DeviceHealth]:
    if site is not None:
        check_site(principal, site)
    rows = conn.execute(_HEALTH_SQL, {"silent": SILENT_INTERVALS, "site": site,
                                      "sites": principal.site_list}).fetchall()
    out = []
    for row in rows:
        item = DeviceHealth(device_id=row[0], site_id=row[1], template=row[2], model=row[3],
                            state=row[4], last_seen=row[5], battery_v=row[6],
                            signal_dbm=row[7], missing_batches=row[8], clock_offset_s=row[9],
                            login=row[10], open_faults=row[11], in_maintenance=row[12],
                            agent_version=row[13], config=row[14], config_error=row[15],
                            visit_score=0, reasons=[])
        item.visit_score, item.reasons = visit_priority(item)
        out.append(item)
    never = datetime.min.replace(tzinfo=UTC)
    out.sort(key=lambda h: (-h.visit_score, h.last_seen or never, h.device_id))
    return out[:limit]
