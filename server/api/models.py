"""Response models: what the OpenAPI schema promises, with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    status: int = Field(examples=[404])
    message: str = Field(examples=["no site 'ag-999'"])


class ErrorBody(BaseModel):
    error: ErrorDetail


ERRORS = {401: {"model": ErrorBody, "description": "no API key, or an unknown one"},
          403: {"model": ErrorBody, "description": "the key may not do this"},
          422: {"model": ErrorBody, "description": "a parameter is invalid"},
          503: {"model": ErrorBody, "description": "the database is unavailable; retry"}}
NOT_FOUND = {404: {"model": ErrorBody, "description": "no such object"}}


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
