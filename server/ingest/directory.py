"""Which devices exist, which site each belongs to, and the series id of each metric.

Ingest resolves every reading through this cache. A miss is looked up in the database
once (a registry load may have added the device since we started); what is still unknown
follows the configured policy: reject it, or register it on the fly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

import psycopg

from tidefield.protocol.catalog import METRICS
from tidefield.server.db import AutocommitConnection, scalar

log = logging.getLogger(__name__)


class UnknownDevicePolicy(StrEnum):
    REJECT = "reject"  # refuse with reason unknown_device / unknown_series
    REGISTER = "register"  # create the device (on a known site) and its series


@dataclass(slots=True)
class DeviceEntry:
    site_id: str
    series: dict[str, int] = field(default_factory=dict)


class DeviceDirectory:
    def __init__(self, url: str, policy: UnknownDevicePolicy = UnknownDevicePolicy.REJECT):
        self.url = url
        self.policy = UnknownDevicePolicy(policy)
        self._devices: dict[str, DeviceEntry] = {}
        self._db = AutocommitConnection(url)

    def _connection(self) -> psycopg.Connection:
        return self._db.get()

    def close(self) -> None:
        self._db.close()

    def load_all(self) -> int:
        rows = self._connection().execute(
            "SELECT d.id, d.site_id, s.metric, s.id FROM devices d "
            "LEFT JOIN series s ON s.device_id = d.id").fetchall()
        devices: dict[str, DeviceEntry] = {}
        for device_id, site_id, metric, series_id in rows:
            entry = devices.setdefault(device_id, DeviceEntry(site_id))
            if metric is not None:
                entry.series[metric] = series_id
        self._devices = devices
        return len(devices)

    def _reload(self, device_id: str) -> DeviceEntry | None:
        rows = self._connection().execute(
            "SELECT d.site_id, s.metric, s.id FROM devices d "
            "LEFT JOIN series s ON s.device_id = d.id WHERE d.id = %s", (device_id,)).fetchall()
        if not rows:
            return None
        entry = DeviceEntry(rows[0][0], {m: i for _, m, i in rows if m is not None})
        self._devices[device_id] = entry
        return entry

    def device(self, device_id: str, site_id: str) -> DeviceEntry | None:
        """The device's entry, registering it when the policy says so and its site exists."""
        entry = self._devices.get(device_id)
        if entry is None or entry.site_id != site_id:
            # unknown, or moved to another site since it was cached (an admin's move):
            # the database says which; a device lying about its site costs one lookup
            entry = self._reload(device_id)
        if entry is None and self.policy is UnknownDevicePolicy.REGISTER:
            entry = self._register_device(device_id, site_id)
        return entry

    def series_id(self, device_id: str, entry: DeviceEntry, metric: str) -> int | None:
        series_id = entry.series.get(metric)
        if series_id is not None:
            return series_id
        fresh = self._reload(device_id)
        if fresh is not None and metric in fresh.series:
            return fresh.series[metric]
        if self.policy is UnknownDevicePolicy.REGISTER and metric in METRICS:
            series_id = scalar(self._connection().execute(
                "INSERT INTO series (device_id, metric) VALUES (%s, %s) "
                "ON CONFLICT (device_id, metric) DO UPDATE SET metric = EXCLUDED.metric "
                "RETURNING id", (device_id, metric)))
            entry.series[metric] = series_id
            self._devices[device_id] = entry
            log.info("registered series", extra={"device": device_id, "metric": metric})
            return series_id
        return None

    def _register_device(self, device_id: str, site_id: str) -> DeviceEntry | None:
        conn = self._connection()
        if conn.execute("SELECT 1 FROM sites WHERE id = %s", (site_id,)).fetchone() is None:
            return None
        conn.execute("INSERT INTO devices (id, site_id, template, model, interval_s) "
                     "VALUES (%s, %s, 'auto', 'auto-registered', 60) ON CONFLICT DO NOTHING",
                     (device_id, site_id))
        log.info("registered device", extra={"device": device_id, "site": site_id})
        return self._reload(device_id)
