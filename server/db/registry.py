"""Put the registry (metric catalog, sites, their devices and series) in the database.

Idempotent: rows are upserted, so loading twice changes nothing, and an operator's edit to
sites.csv (a new name, a moved buoy) is applied by loading again. Series ids, once given,
never change, since readings refer to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.registry import Site


@dataclass(frozen=True, slots=True)
class LoadSummary:
    sites: int
    devices: int
    series: int


def load_registry(conn: psycopg.Connection, sites: Iterable[Site]) -> LoadSummary:
    sites = list(sites)
    devices = [device for site in sites for device in site.devices]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO metrics (name, unit, physical_min, physical_max, typical_min,
                                    typical_max, resolution, name_zh, name_en, circular)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET
                 unit = EXCLUDED.unit, physical_min = EXCLUDED.physical_min,
                 physical_max = EXCLUDED.physical_max, typical_min = EXCLUDED.typical_min,
                 typical_max = EXCLUDED.typical_max, resolution = EXCLUDED.resolution,
                 name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,
                 circular = EXCLUDED.circular""",
            [(m.name, m.unit, *m.physical, *m.typical, m.resolution, m.name_zh, m.name_en,
              m.circular) for m in METRICS.values()])
        cur.executemany(
            """INSERT INTO sites (id, name_zh, name_en, kind, domain, district, lat, lon)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET
                 name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en,
                 kind = EXCLUDED.kind, domain = EXCLUDED.domain,
                 district = EXCLUDED.district, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
                 updated_at = now()
               WHERE (sites.name_zh, sites.name_en, sites.kind, sites.domain, sites.district,
                      sites.lat, sites.lon)
                     IS DISTINCT FROM (EXCLUDED.name_zh, EXCLUDED.name_en, EXCLUDED.kind,
                      EXCLUDED.domain, EXCLUDED.district, EXCLUDED.lat, EXCLUDED.lon)""",
            [(s.id, s.name_zh, s.name_en, s.kind, str(s.domain), s.district, s.lat, s.lon)
             for s in sites])
        cur.executemany(
            """INSERT INTO devices (id, site_id, template, model, interval_s)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (id) DO UPDATE SET
                 template = EXCLUDED.template,
                 model = EXCLUDED.model, interval_s = EXCLUDED.interval_s, updated_at = now()
               -- a device an operator moved to another site stays where they put it
               WHERE devices.site_id = EXCLUDED.site_id
                 AND (devices.template, devices.model, devices.interval_s)
                     IS DISTINCT FROM (EXCLUDED.template, EXCLUDED.model,
                                       EXCLUDED.interval_s)""",
            [(d.id, d.site_id, d.template.name, d.template.model, d.template.interval_s)
             for d in devices])
        cur.executemany(
            "INSERT INTO series (device_id, metric) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(d.id, m) for d in devices for m in d.template.series_metrics])
    return LoadSummary(len(sites), len(devices),
                       sum(len(d.template.series_metrics) for d in devices))
