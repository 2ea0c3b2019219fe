"""Response models: what the OpenAPI schema promises, with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi.responses import Response
from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    status: int = Field(examples=[404])
    message: str = Field(examples=["no site 'ag-999'"])


class ErrorBody(BaseModel):
    error: ErrorDetail


Responses = dict[int | str, dict[str, Any]]  # what FastAPI's `responses=` takes
ERRORS: Responses = {401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
          403: {"model": ErrorBody, "description": "the key may not do this"},
          422: {"model": ErrorBody, "description": "a parameter is invalid"},
          503: {"model": ErrorBody, "description": "the database is unavailable; retry"}}
NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "no such object"}}


class Site(BaseModel):
    id: str = Field(examples=["oc-001"])
    name_zh: str = Field(examples=["胶州湾红岛贝类筏式养殖区"])
    name_en: str = Field(examples=["Hongdao Shellfish Rafts, Jiaozhou Bay"])
    kind: str = Field(examples=["aquaculture_raft"])
    domain: Literal["agriculture", "ocean"]
    district: str = Field(examples=["chengyang"])
    lat: float = Field(examples=[36.21])
    lon: float = Field(examples=[120.25])


class SitePage(BaseModel):
    items: list[Site]
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page")


class DeviceStatus(BaseModel):
    state: Literal["online", "offline", "unknown"] = Field(
        description="offline after a last will, or when silent for 3 of its intervals")
    last_seen: datetime | None = None
    last_reading: datetime | None = None
    missing_batches: int = Field(0, description="sequence numbers never received")


class Device(BaseModel):
    id: str = Field(examples=["oc-001-sonde"])
    site_id: str
    template: str
    model: str
    interval_s: int
    status: DeviceStatus
    retired: bool = Field(False, description="kept with its history; no data expected")


class DevicePage(BaseModel):
    items: list[Device]
    next_cursor: str | None = None


class Series(BaseModel):
    id: int
    device_id: str
    site_id: str
    metric: str = Field(examples=["dissolved_oxygen"])
    unit: str = Field(examples=["mg/L"])


class SeriesPage(BaseModel):
    items: list[Series]
    next_cursor: str | None = None


class Point(BaseModel):
    time: datetime
    value: float


class BucketPoint(BaseModel):
    time: datetime = Field(description="start of the bucket")
    count: int
    mean: float
    min: float
    max: float
    last: float


class Readings(BaseModel):
    series_id: int
    metric: str
    unit: str
    bucket: Literal["raw", "5m", "1h", "1d"]
    points: list[Point] | None = Field(None, description="raw readings (bucket=raw)")
    buckets: list[BucketPoint] | None = Field(None, description="aggregates (other buckets)")
    next_cursor: str | None = Field(None, description="more rows remain: pass as `cursor`")


class Latest(BaseModel):
    series_id: int
    device_id: str
    metric: str
    unit: str
    time: datetime | None
    value: float | None


Category = Literal["fault", "event"]
AlertCategory = Literal["fault", "event", "forecast"]
Severity = Literal["info", "warning", "critical"]
AlertState = Literal["open", "acknowledged", "closed"]


class Anomaly(BaseModel):
    series_id: int
    site_id: str
    device_id: str
    metric: str
    time: datetime
    value: float | None = Field(description="null when the reading was missing or invalid")
    score: float = Field(ge=0, le=1, examples=[0.93])
    component: str = Field(examples=["spike"], description="the detector component that fired")
    category: Category


class AnomalyPage(BaseModel):
    items: list[Anomaly]
    next_cursor: str | None = None


class Alert(BaseModel):
    id: int
    site_id: str = Field(examples=["oc-001"])
    device_id: str | None = Field(None, examples=["oc-001-sonde"])
    series_id: int | None = None
    rule: str = Field(examples=["hypoxia"])
    category: AlertCategory = Field(
        description="fault: a sensor is broken; event: the world is; forecast: an early "
                    "warning that an event's threshold will be crossed")
    severity: Severity
    state: AlertState
    message: str = Field(examples=["dissolved oxygen 2.4 mg/L, under 3.0 mg/L"])
    opened_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    value: float | None = None
    peak_value: float | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    ack_comment: str | None = None
    acknowledged_via: str | None = Field(None, description="a notification's channel, when "
                                         "a contact acknowledged through its link")
    escalated_to: str | None = Field(None, examples=["hypoxia"], description="an early "
                                     "warning closed when the alert it foretold opened: "
                                     "that alert's rule")


class AlertEvent(BaseModel):
    at: datetime
    action: Literal["opened", "updated", "acknowledged", "closed"]
    actor: str = Field(examples=["detector"])
    note: str | None = None
    value: float | None = None


class AlertDetail(Alert):
    history: list[AlertEvent]


class AlertPage(BaseModel):
    items: list[Alert]
    next_cursor: str | None = None


class Acknowledgement(BaseModel):
    comment: str = Field("", max_length=2000, examples=["aerators on, diver sent"])


class SuggestedResponse(BaseModel):
    """A rule's response the detector suggested for an alert (not run automatically), and
    what became of it."""

    id: int
    alert_id: int
    site_id: str
    device_id: str = Field(examples=["oc-021-gw"])
    actuator: str = Field(examples=["aerator"])
    duration_s: int = Field(examples=[14400])
    command_id: str = Field(description="the command confirming issues (one, however often "
                                        "it is confirmed)")
    reason: str = Field(examples=["suggest mode"],
                        description="why it was suggested rather than run")
    suggested_at: datetime
    state: Literal["suggested", "confirmed", "expired", "superseded"] = Field(
        description="expired: the alert closed first; superseded: the actuator was switched "
                    "on for the site another way (superseded_by)")
    confirmed_by: str | None
    confirmed_at: datetime | None
    confirmed_via: str | None
    ended_at: datetime | None
    superseded_by: str | None
    command_state: str | None = Field(None, description="its command's state, once issued")


class SiteOverview(BaseModel):
    site_id: str
    state: Literal["ok", "alert", "offline"] = Field(
        description="offline: no device online; alert: an alert not closed; else ok")
    open_alerts: int = Field(description="alerts not closed (open or acknowledged)")
    devices_online: int
    devices_offline: int


class Overview(BaseModel):
    sites: list[SiteOverview]
    devices_online: int
    devices_offline: int
    open_alerts_by_severity: dict[Severity, int]
    readings_per_second: float = Field(description="stored over the last minute")


def json_response(model: BaseModel) -> Response:
    """``model`` serialised once, by pydantic's Rust core. Returning a model to FastAPI
    validates it again against ``response_model`` before serialising: for a page of
    thousands of points that second pass was most of the request's time. Routes that
    return large pages use this, built from rows whose types the schema fixes."""
    return Response(model.model_dump_json(), media_type="application/json")


# --- device configuration and commands (server/api/routes/control.py) -----------------------


class DeviceConfig(BaseModel):
    """A device's twin: what people want, what the device runs, and where they differ."""

    device_id: str = Field(examples=["oc-001-gw"])
    site_id: str = Field(examples=["oc-001"])
    desired_version: int | None = Field(examples=[3], description="null: never configured")
    desired: dict[str, Any] | None = Field(examples=[{"interval_s": 30}])
    desired_at: datetime | None
    desired_by: str | None
    published_version: int = Field(description="the version sent to the broker (retained)")
    reported_version: int | None = Field(description="what the device runs; 0: its own file")
    reported: dict[str, Any] | None
    reported_at: datetime | None
    reported_error: str | None = Field(description="why the device refused a version")
    agent_version: str | None = Field(description="the agent's release (gateways)")
    in_sync: bool
    difference: dict[str, dict[str, Any]] = Field(
        examples=[{"interval_s": {"desired": 30, "reported": 60}}])


class DesiredSettings(BaseModel):
    settings: dict[str, Any] = Field(
        examples=[{"interval_s": 30, "log_level": "INFO",
                   "thresholds": {"dissolved_oxygen": {"low": 3.0, "high": None}}}],
        description="the whole desired document: interval_s, metrics, thresholds, "
        "log_level, batch_max_readings, batch_max_wait_s")


class CommandRequest(BaseModel):
    action: Literal["set", "read", "reboot", "sync-time", "flush-queue"]
    actuator: str | None = Field(None, examples=["aerator"])
    state: Literal["on", "off"] | None = None
    value: int | None = Field(None, ge=0, le=0xFFFF)
    duration_s: float | None = Field(None, gt=0, le=7 * 86400,
                                     description="set on: switch off again after this long")
    expires_in_s: float = Field(3600.0, ge=1, le=7 * 86400,
                                description="the device refuses it after this long")


class DeviceCommand(BaseModel):
    id: str = Field(examples=["cmd-5f2c0e9d4b1a7c3e8f6d2a10"])
    device_id: str
    site_id: str
    action: str
    params: dict[str, Any]
    state: Literal["pending", "sent", "delivered", "done", "failed", "expired"]
    reason: str | None
    value: float | None
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    sent_at: datetime | None
    delivered_at: datetime | None
    finished_at: datetime | None


class SiteControl(BaseModel):
    """A site's devices (their configuration) and its recent commands, newest first."""

    site_id: str
    devices: list[DeviceConfig]
    commands: list[DeviceCommand]


class FleetVersion(BaseModel):
    """How many gateways run an agent version ('unknown': never reported one)."""

    version: str = Field(examples=["0.2.0"])
    gateways: int
    sites: list[str]
