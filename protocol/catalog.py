"""The vocabulary every part of Tidefield shares: metrics, site kinds, device templates.

This module is the only place where a unit, a physical limit or a typical range is
written. Validation (protocol), simulation (tidefield.sim), detection and dashboards all
read it from here.

* ``physical`` is what the quantity can possibly be (or what the sensor can possibly
  report); a value outside it is rejected at ingest as ``out_of_range``.
* ``typical`` is what a healthy sensor at a Qingdao site usually reports; detectors and
  dashboards use it for scaling, never for rejecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Domain(StrEnum):
    AGRICULTURE = "agriculture"
    OCEAN = "ocean"


@dataclass(frozen=True, slots=True)
class SiteKind:
    name: str
    domain: Domain
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    unit: str
    physical: tuple[float, float]
    typical: tuple[float, float]
    resolution: float  # the smallest step a common sensor reports (quantisation)
    name_zh: str
    name_en: str
    circular: bool = False  # directions: 359 and 1 degrees are neighbours

    def in_physical_range(self, value: float) -> bool:
        return self.physical[0] <= value <= self.physical[1]


@dataclass(frozen=True, slots=True)
class DeviceTemplate:
    """A kind of field device: which metrics it reports and how often."""

    name: str  # short, used in device ids: "{site}-{name}"
    model: str  # what it stands for in the field
    metrics: tuple[str, ...]  # what its sensors measure
    interval_s: int  # nominal sample interval
    # What the edge agent running on it reports about itself (queue depth, memory...):
    # stored as series like the rest, but nothing a simulator should model.
    reported: tuple[str, ...] = ()

    @property
    def series_metrics(self) -> tuple[str, ...]:
        """Every metric stored for a device of this template."""
        return self.metrics + self.reported


_K = SiteKind
_A, _O = Domain.AGRICULTURE, Domain.OCEAN

SITE_KINDS: MappingProxyType[str, SiteKind] = MappingProxyType({k.name: k for k in (
    _K("greenhouse", _A, "智慧温室", "smart greenhouse"),
    _K("orchard", _A, "果园", "orchard"),
    _K("tea_garden", _A, "茶园", "tea garden"),
    _K("field_crop", _A, "大田", "field crops"),
    _K("livestock", _A, "畜牧养殖场", "livestock farm"),
    _K("aquaculture_raft", _O, "筏式养殖区", "aquaculture raft"),
    _K("cage_farm", _O, "深远海网箱", "offshore cage farm"),
    _K("marine_ranch", _O, "海洋牧场", "marine ranch"),
    _K("port_terminal", _O, "港口码头", "port terminal"),
    _K("ecological_buoy", _O, "生态监测浮标", "ecological buoy"),
    _K("coastal_station", _O, "海岸观测站", "coastal station"),
)})

_M = Metric
METRICS: MappingProxyType[str, Metric] = MappingProxyType({m.name: m for m in (
    # --- weather (both domains) ---------------------------------------------------
    _M("air_temperature", "°C", (-40.0, 60.0), (-15.0, 38.0), 0.1, "气温", "air temperature"),
    _M("air_humidity", "%", (0.0, 100.0), (15.0, 100.0), 0.1, "空气湿度", "air humidity"),
    _M("air_pressure", "hPa", (870.0, 1085.0), (990.0, 1040.0), 0.1, "气压", "air pressure"),
    _M("wind_speed", "m/s", (0.0, 75.0), (0.0, 20.0), 0.1, "风速", "wind speed"),
    _M("wind_direction", "°", (0.0, 360.0), (0.0, 360.0), 1.0, "风向", "wind direction",
       circular=True),
    _M("rainfall", "mm", (0.0, 200.0), (0.0, 10.0), 0.2, "降雨量", "rainfall"),
    _M("solar_radiation", "W/m²", (0.0, 1500.0), (0.0, 1000.0), 1.0, "太阳辐射",
       "solar radiation"),
    _M("par", "µmol/m²/s", (0.0, 2500.0), (0.0, 2000.0), 1.0, "光合有效辐射",
       "photosynthetically active radiation"),
    # --- soil and plants ----------------------------------------------------------
    _M("soil_temperature", "°C", (-30.0, 60.0), (-5.0, 32.0), 0.1, "土壤温度",
       "soil temperature"),
    _M("soil_moisture", "%", (0.0, 100.0), (8.0, 45.0), 0.1, "土壤含水量",
       "soil moisture (volumetric)"),
    _M("soil_ec", "mS/cm", (0.0, 20.0), (0.1, 3.0), 0.01, "土壤电导率",
       "soil electrical conductivity"),
    _M("soil_ph", "pH", (0.0, 14.0), (5.0, 8.0), 0.01, "土壤pH", "soil pH"),
    _M("leaf_wetness", "%", (0.0, 100.0), (0.0, 100.0), 1.0, "叶面湿度", "leaf wetness"),
    _M("co2", "ppm", (0.0, 10000.0), (250.0, 1500.0), 1.0, "二氧化碳浓度", "CO2"),
    _M("ammonia", "ppm", (0.0, 500.0), (0.0, 25.0), 0.1, "氨气浓度", "ammonia (NH3)"),
    # --- water --------------------------------------------------------------------
    _M("water_temperature", "°C", (-2.5, 40.0), (1.0, 29.0), 0.01, "水温",
       "water temperature"),
    _M("salinity", "PSU", (0.0, 45.0), (26.0, 33.5), 0.01, "盐度", "salinity"),
    _M("dissolved_oxygen", "mg/L", (0.0, 25.0), (4.0, 12.0), 0.01, "溶解氧",
       "dissolved oxygen"),
    _M("water_ph", "pH", (0.0, 14.0), (7.6, 8.5), 0.01, "水体pH", "water pH"),
    _M("turbidity", "NTU", (0.0, 4000.0), (0.0, 50.0), 0.1, "浊度", "turbidity"),
    _M("chlorophyll_a", "µg/L", (0.0, 500.0), (0.1, 20.0), 0.01, "叶绿素a",
       "chlorophyll-a"),
    _M("tide_level", "m", (-6.0, 8.0), (-2.5, 2.5), 0.01, "潮位",
       "tide level (above mean sea level)"),
    _M("wave_height", "m", (0.0, 20.0), (0.0, 3.0), 0.01, "有效波高",
       "significant wave height"),
    _M("wave_period", "s", (0.0, 30.0), (2.0, 12.0), 0.1, "波周期", "wave period"),
    _M("current_speed", "m/s", (0.0, 5.0), (0.0, 1.2), 0.01, "流速", "current speed"),
    _M("current_direction", "°", (0.0, 360.0), (0.0, 360.0), 1.0, "流向",
       "current direction", circular=True),
    # --- device health (reported by devices and edge agents about themselves) -----
    _M("battery_voltage", "V", (0.0, 30.0), (11.0, 14.5), 0.01, "电池电压",
       "battery voltage"),
    _M("signal_rssi", "dBm", (-140.0, 0.0), (-110.0, -50.0), 1.0, "信号强度",
       "signal strength"),
    # --- edge agent health (what a gateway's agent reports about itself) ----------
    _M("agent_queue_depth", "readings", (0.0, 1e9), (0.0, 1000.0), 1.0, "待发队列长度",
       "edge queue depth"),
    _M("agent_queue_age", "s", (0.0, 1e8), (0.0, 120.0), 1.0, "最早待发读数时长",
       "age of the oldest queued reading"),
    _M("agent_dropped", "readings", (0.0, 1e12), (0.0, 0.0), 1.0, "丢弃读数累计",
       "readings dropped by the edge queue (total)"),
    _M("agent_publish_latency", "ms", (0.0, 3.6e6), (0.0, 500.0), 1.0, "发布时延",
       "publish latency (to PUBACK)"),
    _M("agent_rss", "MB", (0.0, 1e5), (10.0, 60.0), 0.1, "代理内存占用",
       "edge agent resident memory"),
    _M("agent_cpu", "%", (0.0, 800.0), (0.0, 5.0), 0.1, "代理CPU占用", "edge agent CPU"),
)})

# What an edge agent reports about itself, as readings of its site's gateway device.
AGENT_METRICS = ("agent_queue_depth", "agent_queue_age", "agent_dropped",
                 "agent_publish_latency", "agent_rss", "agent_cpu")

_D = DeviceTemplate
_WEATHER = _D("wx", "compact weather station",
              ("air_temperature", "air_humidity", "air_pressure", "wind_speed",
               "wind_direction", "rainfall", "solar_radiation"), 60)
_SOIL = _D("soil", "RS-485 soil moisture/temperature/EC probe",
           ("soil_moisture", "soil_temperature", "soil_ec"), 300)
_SONDE = _D("sonde", "multi-parameter water-quality sonde",
            ("water_temperature", "salinity", "dissolved_oxygen", "water_ph",
             "turbidity", "chlorophyll_a"), 60)
_GATEWAY = _D("gw", "edge gateway", ("battery_voltage", "signal_rssi"), 300,
              reported=AGENT_METRICS)

DEVICE_TEMPLATES: MappingProxyType[str, tuple[DeviceTemplate, ...]] = MappingProxyType({
    "greenhouse": (
        _D("climate", "greenhouse climate sensor",
           ("air_temperature", "air_humidity", "co2", "par"), 60),
        _SOIL, _D("soilph", "soil pH probe", ("soil_ph",), 600), _GATEWAY),
    "orchard": (_WEATHER, _SOIL, _D("leaf", "leaf wetness sensor", ("leaf_wetness",), 300),
                _GATEWAY),
    "tea_garden": (_WEATHER, _SOIL, _D("leaf", "leaf wetness sensor", ("leaf_wetness",), 300),
                   _GATEWAY),
    "field_crop": (_WEATHER, _SOIL, _D("soilph", "soil pH probe", ("soil_ph",), 600),
                   _GATEWAY),
    "livestock": (_D("barn", "barn climate sensor",
                     ("air_temperature", "air_humidity", "co2", "ammonia"), 60), _GATEWAY),
    "aquaculture_raft": (_SONDE, _D("tide", "pressure tide gauge", ("tide_level",), 60),
                         _GATEWAY),
    "cage_farm": (_SONDE, _D("sonde2", "second water-quality sonde (cage interior)",
                             ("water_temperature", "dissolved_oxygen"), 60),
                  _D("adcp", "acoustic current profiler",
                     ("current_speed", "current_direction"), 300), _GATEWAY),
    "marine_ranch": (_SONDE, _D("adcp", "acoustic current profiler",
                                ("current_speed", "current_direction"), 300), _GATEWAY),
    "port_terminal": (_WEATHER, _D("tide", "radar tide gauge", ("tide_level",), 60),
                      _D("wave", "wave buoy", ("wave_height", "wave_period"), 300), _GATEWAY),
    "ecological_buoy": (_SONDE, _D("wave", "wave buoy", ("wave_height", "wave_period"), 300),
                        _D("met", "buoy weather mast",
                           ("air_temperature", "air_pressure", "wind_speed", "wind_direction"),
                           60), _GATEWAY),
    "coastal_station": (_WEATHER, _D("tide", "pressure tide gauge", ("tide_level",), 60),
                        _D("sonde", "shore water-quality sonde",
                           ("water_temperature", "salinity", "dissolved_oxygen"), 60),
                        _GATEWAY),
})


def metric(name: str) -> Metric:
    """The catalog entry for ``name``; KeyError names the metric when it is unknown."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}") from None


def metrics_of_kind(kind: str) -> tuple[str, ...]:
    """Every metric a site of ``kind`` carries, in template order, without repeats."""
    seen: dict[str, None] = {}
    for template in DEVICE_TEMPLATES[kind]:
        seen.update(dict.fromkeys(template.metrics))
    return tuple(seen)
