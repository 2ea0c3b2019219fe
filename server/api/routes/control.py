"""Device configuration (the twin) and commands: people set what devices should do; the
control service (server/control/service.py) delivers it and stores the answers.

Reading needs the read right on the device's site; changing a configuration or sending a
command needs the operate right there (an operator of the site's organisation), and each
change is written to the audit log with who made it and from where.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Path, Request

from tidefield.server.control import store
from tidefield.server.security import audit
from tidefield.server.security.api_keys import Principal, Scope
from tidefield.server.web.deps import (
    ConnDep,
    Operator,
    ReadConnDep,
    Reader,
    check_act,
    client_address,
)

from ..models import (
    ERRORS,
    NOT_FOUND,
    CommandRequest,
    DesiredSettings,
    DeviceCommand,
    DeviceConfig,
    FleetVersion,
    SiteControl,
)
from ..query_params import Limit

router = APIRouter(tags=["control"], responses=ERRORS)

DeviceId = Annotated[str, Path(max_length=64, examples=["oc-001-gw"])]
SiteId = Annotated[str, Path(max_length=64, examples=["oc-001"])]


def _config(twin: store.Twin) -> DeviceConfig:
    return DeviceConfig(**dataclasses.asdict(twin), in_sync=twin.in_sync,
                        difference=twin.difference())


def _command(row: store.CommandRow) -> DeviceCommand:
    return DeviceCommand(**dataclasses.asdict(row))


def _visible_site(conn: psycopg.Connection, principal: Principal, device_id: str) -> str:
    """The device's site; 404 for a device the caller may not see (as for one that does
    not exist: another company's device ids are not for it to learn)."""
    try:
        site = store.device_site(conn, device_id=device_id)
    except store.UnknownDevice:
        site = None
    if site is None or not principal.may_see(site):
        raise HTTPException(404, f"no device {device_id}")
    return site


@router.get("/devices/{device_id}/config", response_model=DeviceConfig, responses=NOT_FOUND,
            summary="A device's desired and reported configuration, and the difference")
def get_config(device_id: DeviceId, conn: ReadConnDep, principal: Reader) -> DeviceConfig:
    _visible_site(conn, principal, device_id)
    return _config(store.twin(conn, device_id=device_id))


@router.put("/devices/{device_id}/config", response_model=DeviceConfig, responses=NOT_FOUND,
            summary="Set a new desired configuration version (operate right)")
def put_config(device_id: DeviceId, body: DesiredSettings, conn: ConnDep,
               principal: Operator, request: Request) -> DeviceConfig:
    """The body is the whole desired document; its version is the previous one plus one.
    The device applies it when it next connects if it is offline now."""
    site = _visible_site(conn, principal, device_id)
    check_act(principal, Scope.OPERATE, site)
    with conn.transaction():
        before = store.twin(conn, device_id=device_id)
        try:
            twin = store.set_desired(conn, device_id=device_id, settings=body.settings,
                                     actor=principal.name)
        except store.ControlError as exc:
            raise HTTPException(422, str(exc)) from None
        audit.record(conn, actor=principal, action="device.configured",
                     target=f"device:{device_id}", site_id=site,
                     before={"version": before.desired_version, "settings": before.desired},
                     after={"version": twin.desired_version, "settings": twin.desired},
                     source_address=client_address(request))
    return _config(twin)


@router.post("/devices/{device_id}/commands", response_model=DeviceCommand, status_code=201,
             responses=NOT_FOUND, summary="Send a command to a device (operate right)")
def post_command(device_id: DeviceId, body: CommandRequest, conn: ConnDep,
                 principal: Operator, request: Request) -> DeviceCommand:
    """Queued as ``pending``; the control service sends it (``sent``), the device answers
    ``delivered``, then ``done`` or ``failed`` with its reason; a command the device gets
    after ``expires_in_s`` is not run (``expired``)."""
    site = _visible_site(conn, principal, device_id)
    check_act(principal, Scope.OPERATE, site)
    params = body.model_dump(exclude={"action", "expires_in_s"}, exclude_none=True)
    with conn.transaction():
        try:
            row = store.create_command(conn, device_id=device_id, action=body.action,
                                       params=params, actor=principal.name,
                                       expires_in_s=body.expires_in_s)
        except store.ControlError as exc:
            raise HTTPException(422, str(exc)) from None
        audit.record(conn, actor=principal, action="device.commanded",
                     target=f"command:{row.id}", site_id=site,
                     after={"device": device_id, "action": row.action, "params": row.params,
                            "expires_at": row.expires_at.isoformat()},
                     source_address=client_address(request))
    return _command(row)


@router.get("/devices/{device_id}/commands", response_model=list[DeviceCommand],
            responses=NOT_FOUND, summary="A device's commands, newest first")
def list_commands(device_id: DeviceId, conn: ReadConnDep, principal: Reader,
                  limit: Limit = 100) -> list[DeviceCommand]:
    _visible_site(conn, principal, device_id)
    return [_command(r) for r in store.commands(conn, device_id=device_id, limit=limit)]


@router.get("/sites/{site_id}/control", response_model=SiteControl, responses=NOT_FOUND,
            summary="A site's device configurations and command history")
def site_control(site_id: SiteId, conn: ReadConnDep, principal: Reader,
                 limit: Limit = 100) -> SiteControl:
    if not principal.may_see(site_id):
        raise HTTPException(404, f"no site {site_id}")
    twins = store.site_twins(conn, site_id=site_id)
    if not twins:
        raise HTTPException(404, f"no site {site_id}")
    return SiteControl(site_id=site_id, devices=[_config(t) for t in twins],
                       commands=[_command(r) for r in store.commands(
                           conn, site_id=site_id, limit=limit)])


@router.get("/fleet/versions", response_model=list[FleetVersion],
            summary="Agent versions across the gateways the caller may read")
def fleet_versions(conn: ReadConnDep, principal: Reader) -> list[FleetVersion]:
    return [FleetVersion(version=v, gateways=n, sites=s)
            for v, n, s in store.fleet_versions(conn, sites=principal.site_list)]
