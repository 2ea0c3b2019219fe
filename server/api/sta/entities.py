"""How Tidefield's tables appear as SensorThings entity sets: one registry entry per set.

The mapping, and why (SensorThings clients expect a Thing to be the platform that carries
sensors and has a place, each Datastream one quantity of one Thing measured by one Sensor):

    Thing             a device (a sonde, a weather mast, a soil probe): it carries the
                      sensors and sits at one site
    Location          a site, as a GeoJSON point: every device of a site is there
    Datastream        a series: one metric of one device
    Sensor            a device model ("pressure tide gauge"), shared by the Datastreams of
                      every device of that model; its id is a slug of the model name
    ObservedProperty  a metric of the catalog (id: the metric's name)
    Observation       a reading; its id '<series>:<epoch ms>' is stable and unique, since
                      a series holds at most one reading per millisecond

Each set is a SQL ``base`` that yields one row per entity the caller may see: every base
carries the key's site limit (``%(sites)s``, NULL for an unlimited key), so lists, ids,
navigation, $filter, $expand and nextLinks all see only the caller's sites. Sensors and
ObservedProperties are shown only where a visible Datastream uses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .filter import Column, Type

# A slug of a device model, in SQL so $filter and navigation can compare it.
_SENSOR_SLUG = ("coalesce(nullif(trim(both '-' from regexp_replace(lower({m}), "
                "'[^a-z0-9]+', '-', 'g')), ''), md5({m}))")
VISIBLE = "(%(sites)s::text[] IS NULL OR {site} = ANY(%(sites)s))"

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
UCUM = "http://unitsofmeasure.org/ucum.html"


@dataclass(frozen=True, slots=True)
class Navigation:
    """A link to another set: its rows whose ``target_column`` equals our ``source_column``."""

    target: str
    many: bool
    target_column: str
    source_column: str


@dataclass(frozen=True)
class EntitySet:
    name: str  # "Things"
    key_type: Type  # Type.STRING ('oc-001') or Type.NUMBER (42)
    base: str  # SQL: one row per visible entity, column "id" its key
    columns: Mapping[str, Column]  # what $filter and $orderby may name
    properties: tuple[str, ...]  # what the entity shows (and $select may name)
    render: Callable[[dict], dict]  # a base row -> its properties
    navigations: Mapping[str, Navigation] = field(default_factory=dict)
    site_column: str | None = "site_id"  # a row of another site is 403, not 404
    default_order: tuple[tuple[str, bool], ...] = (("id", False),)


def iso(value: datetime) -> str:
    """UTC with milliseconds and a Z, as SensorThings examples write it."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(columns: Mapping[str, Column]) -> dict[str, Column]:
    out = dict(columns)
    out["@iot.id"] = out["id"]
    return out


# ---------------------------------------------------------------------------- Things

THINGS = EntitySet(
    name="Things",
    key_type=Type.STRING,
    base=f"""SELECT d.id, d.site_id, d.template, d.model, d.interval_s,
                    {_SENSOR_SLUG.format(m="d.model")} AS sensor_id,
                    d.model || ' at ' || st.name_en AS description
             FROM devices d JOIN sites st ON st.id = d.site_id
             WHERE {VISIBLE.format(site="d.site_id")}""",
    columns=_common({
        "id": Column("e.id", Type.STRING),
        "name": Column("e.id", Type.STRING),
        "description": Column("e.description", Type.STRING),
        "properties/site": Column("e.site_id", Type.STRING),
        "properties/model": Column("e.model", Type.STRING),
        "properties/template": Column("e.template", Type.STRING),
        "properties/interval_s": Column("e.interval_s", Type.NUMBER),
        "Locations/id": Column("e.site_id", Type.STRING),
    }),
    properties=("name", "description", "properties"),
    render=lambda r: {"name": r["id"], "description": r["description"],
                      "properties": {"site": r["site_id"], "template": r["template"],
                                     "model": r["model"], "interval_s": r["interval_s"]}},
    navigations={
        "Locations": Navigation("Locations", True, "id", "site_id"),
        "Datastreams": Navigation("Datastreams", True, "thing_id", "id"),
    },
)

# ---------------------------------------------------------------------------- Locations

LOCATIONS = EntitySet(
    name="Locations",
    key_type=Type.STRING,
    base=f"""SELECT id, id AS site_id, name_en, name_zh, kind, domain, district, lat, lon
             FROM sites WHERE {VISIBLE.format(site="id")}""",
    columns=_common({
        "id": Column("e.id", Type.STRING),
        "name": Column("e.name_en", Type.STRING),
        "description": Column("e.name_zh", Type.STRING),
        "properties/kind": Column("e.kind", Type.STRING),
        "properties/domain": Column("e.domain", Type.STRING),
        "properties/district": Column("e.district", Type.STRING),
    }),
    properties=("name", "description", "encodingType", "location", "properties"),
    render=lambda r: {"name": r["name_en"], "description": r["name_zh"],
                      "encodingType": "application/geo+json",
                      "location": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                      "properties": {"kind": r["kind"], "domain": r["domain"],
                                     "district": r["district"]}},
    navigations={"Things": Navigation("Things", True, "site_id", "id")},
)

# ---------------------------------------------------------------------------- Datastreams

DATASTREAMS = EntitySet(
    name="Datastreams",
    key_type=Type.NUMBER,
    base=f"""SELECT s.id, s.device_id AS thing_id, d.site_id, s.metric AS observed_property_id,
                    {_SENSOR_SLUG.format(m="d.model")} AS sensor_id, d.model,
                    m.unit, m.name_en AS metric_name, d.interval_s,
                    s.device_id || ' ' || m.name_en AS name,
                    m.name_en || ' (' || m.unit || ') measured by the ' || d.model || ' '
                        || s.device_id AS description
             FROM series s JOIN devices d ON d.id = s.device_id
             JOIN metrics m ON m.name = s.metric
             WHERE {VISIBLE.format(site="d.site_id")}""",
    columns=_common({
        "id": Column("e.id", Type.NUMBER),
        "name": Column("e.name", Type.STRING),
        "description": Column("e.description", Type.STRING),
        "unitOfMeasurement/name": Column("e.unit", Type.STRING),
        "unitOfMeasurement/symbol": Column("e.unit", Type.STRING),
        "properties/site": Column("e.site_id", Type.STRING),
        "properties/metric": Column("e.observed_property_id", Type.STRING),
        "Thing/id": Column("e.thing_id", Type.STRING),
        "Thing/@iot.id": Column("e.thing_id", Type.STRING),
        "Sensor/id": Column("e.sensor_id", Type.STRING),
        "Sensor/@iot.id": Column("e.sensor_id", Type.STRING),
        "Sensor/name": Column("e.model", Type.STRING),
        "ObservedProperty/id": Column("e.observed_property_id", Type.STRING),
        "ObservedProperty/@iot.id": Column("e.observed_property_id", Type.STRING),
        "ObservedProperty/name": Column("e.metric_name", Type.STRING),
        "Thing/Locations/id": Column("e.site_id", Type.STRING),
    }),
    properties=("name", "description", "unitOfMeasurement", "observationType",
                "phenomenonTime", "properties"),
    render=lambda r: {
        "name": r["name"], "description": r["description"],
        "unitOfMeasurement": {"name": r["unit"], "symbol": r["unit"], "definition": UCUM},
        "observationType": OM_MEASUREMENT,
        # filled in after paging (two index probes per Datastream), when asked for
        "phenomenonTime": r.get("phenomenon_time"),
        "properties": {"site": r["site_id"], "device": r["thing_id"],
                       "metric": r["observed_property_id"], "interval_s": r["interval_s"]}},
    navigations={
        "Thing": Navigation("Things", False, "id", "thing_id"),
        "Sensor": Navigation("Sensors", False, "id", "sensor_id"),
        "ObservedProperty": Navigation("ObservedProperties", False, "id",
                                       "observed_property_id"),
        "Observations": Navigation("Observations", True, "series_id", "id"),
    },
)

# ---------------------------------------------------------------------------- Sensors

SENSORS = EntitySet(
    name="Sensors",
    key_type=Type.STRING,
    base=f"""SELECT {_SENSOR_SLUG.format(m="d.model")} AS id, d.model AS name,
                    string_agg(DISTINCT d.template, ',') AS templates
             FROM devices d WHERE {VISIBLE.format(site="d.site_id")}
             GROUP BY d.model""",
    columns=_common({
        "id": Column("e.id", Type.STRING),
        "name": Column("e.name", Type.STRING),
        "description": Column("e.name", Type.STRING),
    }),
    properties=("name", "description", "encodingType", "metadata", "properties"),
    render=lambda r: {"name": r["name"], "description": r["name"],
                      "encodingType": "text/plain", "metadata": r["name"],
                      "properties": {"templates": r["templates"].split(",")}},
    navigations={"Datastreams": Navigation("Datastreams", True, "sensor_id", "id")},
    site_column=None,
)

# ---------------------------------------------------------------------------- ObservedProperties

OBSERVED_PROPERTIES = EntitySet(
    name="ObservedProperties",
    key_type=Type.STRING,
    base=f"""SELECT m.name AS id, m.name_en, m.name_zh, m.unit, m.physical_min,
                    m.physical_max, m.typical_min, m.typical_max, m.resolution
             FROM metrics m
             WHERE EXISTS (SELECT 1 FROM series s JOIN devices d ON d.id = s.device_id
                           WHERE s.metric = m.name AND {VISIBLE.format(site="d.site_id")})""",
    columns=_common({
        "id": Column("e.id", Type.STRING),
        "name": Column("e.name_en", Type.STRING),
        "description": Column("e.name_zh", Type.STRING),
        "properties/unit": Column("e.unit", Type.STRING),
    }),
    properties=("name", "definition", "description", "properties"),
    render=lambda r: {
        "name": r["name_en"], "definition": f"urn:tidefield:metric:{r['id']}",
        "description": f"{r['name_en']} ({r['name_zh']}), in {r['unit']}",
        "properties": {"name_zh": r["name_zh"], "unit": r["unit"],
                       "physical_range": [r["physical_min"], r["physical_max"]],
                       "typical_range": [r["typical_min"], r["typical_max"]],
                       "resolution": r["resolution"]}},
    navigations={"Datastreams": Navigation("Datastreams", True, "observed_property_id",
                                           "id")},
    site_column=None,
)

# ---------------------------------------------------------------------------- Observations
# Its rows come from a LATERAL join of the Datastreams base (alias e) with readings
# (alias r), see query.py; columns on e filter Datastreams, columns on r filter readings.

OBSERVATION_SERIES = f"""SELECT s.id AS series_id, d.site_id
                         FROM series s JOIN devices d ON d.id = s.device_id
                         WHERE {VISIBLE.format(site="d.site_id")}"""

OBSERVATIONS = EntitySet(
    name="Observations",
    key_type=Type.STRING,
    base=OBSERVATION_SERIES,
    columns={
        "phenomenonTime": Column("r.time", Type.TIME),
        "resultTime": Column("r.time", Type.TIME),
        "result": Column("r.value", Type.NUMBER),
        "Datastream/id": Column("e.series_id", Type.NUMBER),
        "Datastream/@iot.id": Column("e.series_id", Type.NUMBER),
    },
    properties=("phenomenonTime", "resultTime", "result", "resultQuality"),
    # a reading's one time is both when it was observed and when its result was made
    # (a missing reading, NaN, has a null result: JSON has no NaN)
    render=lambda r: {"phenomenonTime": r["iso"], "resultTime": r["iso"],
                      "result": r["value"] if math.isfinite(r["value"]) else None,
                      "resultQuality": result_quality(r)},
    navigations={"Datastream": Navigation("Datastreams", False, "id", "series_id")},
    # an Observation's id is (Datastream, phenomenonTime): ordering by id is that order
    default_order=(("Datastream/id", False), ("phenomenonTime", False)),
)


def result_quality(row: dict) -> dict:
    """An Observation's QARTOD flag and the test that set it (``detect.qartod``), from its
    stored anomaly; its ``scheme`` says how to read the flag."""
    from tidefield.server.detect.qartod import flag_of

    flag, test = flag_of(row["value"], row.get("anomaly_score"), row.get("anomaly_component"),
                         row.get("anomaly_category"), bool(row.get("scored")))
    return {"scheme": "QARTOD", "flag": flag, "test": test}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def observation_id(series_id: int, epoch_ms: int) -> str:
    return f"{series_id}:{epoch_ms}"


ENTITY_SETS: Mapping[str, EntitySet] = {s.name: s for s in (
    THINGS, LOCATIONS, DATASTREAMS, SENSORS, OBSERVED_PROPERTIES, OBSERVATIONS)}
