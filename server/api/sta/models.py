"""What the OpenAPI schema promises for /sta/v1.1 (the JSON itself is built in query.py).

Every property is optional and more are allowed: $select leaves some out, $expand adds
related entities inline.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from tidefield.server.api.models import Responses


class StaErrorBody(BaseModel):
    code: int = Field(examples=[400])
    type: str = Field(examples=["error"])
    message: str = Field(examples=["$filter: unknown property 'temperature'"])


ERRORS: Responses = {400: {"model": StaErrorBody, "description": "a query option or id is invalid"},
          401: {"model": StaErrorBody, "description": "no API key, or an unknown one"},
          403: {"model": StaErrorBody, "description": "the key may not read this"},
          404: {"model": StaErrorBody, "description": "no such entity"},
          503: {"model": StaErrorBody, "description": "the database is unavailable; retry"}}


class _Entity(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    iot_self_link: str | None = Field(None, alias="@iot.selfLink")


class Thing(_Entity):
    iot_id: str | None = Field(None, alias="@iot.id", examples=["oc-001-sonde"])
    name: str | None = None
    description: str | None = None
    properties: dict[str, Any] | None = None


class Location(_Entity):
    iot_id: str | None = Field(None, alias="@iot.id", examples=["oc-001"])
    name: str | None = None
    description: str | None = None
    encodingType: str | None = Field(None, examples=["application/geo+json"])
    location: dict[str, Any] | None = Field(
        None, examples=[{"type": "Point", "coordinates": [120.25, 36.21]}])
    properties: dict[str, Any] | None = None


class UnitOfMeasurement(BaseModel):
    name: str | None = None
    symbol: str | None = None
    definition: str | None = None


class Datastream(_Entity):
    iot_id: int | None = Field(None, alias="@iot.id", examples=[42])
    name: str | None = None
    description: str | None = None
    unitOfMeasurement: UnitOfMeasurement | None = None
    observationType: str | None = None
    phenomenonTime: str | None = Field(
        None, description="first/last reading, ISO 8601 interval; null when empty")
    properties: dict[str, Any] | None = None


class Sensor(_Entity):
    iot_id: str | None = Field(None, alias="@iot.id", examples=["pressure-tide-gauge"])
    name: str | None = None
    description: str | None = None
    encodingType: str | None = None
    metadata: str | None = None
    properties: dict[str, Any] | None = None


class ObservedProperty(_Entity):
    iot_id: str | None = Field(None, alias="@iot.id", examples=["dissolved_oxygen"])
    name: str | None = None
    definition: str | None = None
    description: str | None = None
    properties: dict[str, Any] | None = None


class Observation(_Entity):
    iot_id: str | None = Field(None, alias="@iot.id", examples=["42:1764374400000"],
                               description="'<Datastream id>:<epoch milliseconds>'")
    phenomenonTime: str | None = None
    resultTime: str | None = None
    result: float | None = None


class _PageBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    count: int | None = Field(None, alias="@iot.count",
                              description="with $count=true: all matches, on every page")
    next_link: str | None = Field(None, alias="@iot.nextLink",
                                  description="the next page; absent on the last")


def _page(entity: type[BaseModel]) -> type[BaseModel]:
    return create_model(f"{entity.__name__}Page", __base__=_PageBase,
                        value=(list[entity], ...))  # type: ignore[valid-type]


ENTITY_MODELS: dict[str, type[BaseModel]] = {
    "Things": Thing, "Locations": Location, "Datastreams": Datastream, "Sensors": Sensor,
    "ObservedProperties": ObservedProperty, "Observations": Observation}
PAGE_MODELS = {name: _page(model) for name, model in ENTITY_MODELS.items()}


class EntitySetLink(BaseModel):
    name: str
    url: str


class ServerSettings(BaseModel):
    conformance: list[str]


class ServiceRoot(BaseModel):
    value: list[EntitySetLink]
    serverSettings: ServerSettings
