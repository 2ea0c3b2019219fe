"""What the dashboard tests share: the real API served on a free port, and a seeded fleet.

The data goes in the way it would in production: readings and device births through the
ingest pipeline (so rollups and device status are real), alerts and anomalies as rows of
their tables (the detector writes them the same way).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import uvicorn

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import Limits, encode_batch, encode_status
from tidefield.protocol.messages import Batch, DeviceState, Reading, Status
from tidefield.protocol.registry import Site, load_sites
from tidefield.protocol.topics import status_topic, up_topic
from tidefield.server.api.app import create_app
from tidefield.server.embedded import free_port
from tidefield.server.ingest.directory import DeviceDirectory
from tidefield.server.ingest.pipeline import Envelope, prepare
from tidefield.server.ingest.store import LoadStrategy, Store
from tidefield.server.settings import ApiSettings

MIN_MS = 60_000


class ApiServer:
    """`create_app` under uvicorn in a thread of the test process, on a free port."""

    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        # its own data folder: a login it hands out must not reach the broker config
        # of a `tidefield up` run in the working directory
        self.data_dir = Path(tempfile.mkdtemp(prefix="tidefield-test-api-"))
        settings = ApiSettings(database_url=database_url, data_dir=self.data_dir)
        config = uvicorn.Config(create_app(settings),
                                host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class SeededFleet:
    now: datetime
    ocean: Site            # readings on every device, alerts, anomalies
    farm: Site             # readings; its soil probe is offline (last will)
    quiet: Site            # an alert, no readings
    series: dict[tuple[str, str], int] = field(default_factory=dict)  # (device, metric)
    alert_ids: dict[str, int] = field(default_factory=dict)


def _wave(metric: str, t_ms: int, phase: float) -> float:
    low, high = METRICS[metric].typical
    mid, amp = (low + high) / 2, (high - low) / 4
    value = mid + amp * math.sin(2 * math.pi * t_ms / 86_400_000 + phase)
    return round(min(max(value, METRICS[metric].physical[0]), METRICS[metric].physical[1]), 3)


def seed_fleet(url: str, *, hours: int = 36) -> SeededFleet:
    """Two sites with `hours` of readings (each device at its own interval, ending now),
    one device gone offline, four alerts in every state, anomalies on dissolved oxygen."""
    sites = load_sites()
    fleet = SeededFleet(now=datetime.now(UTC),
                        ocean=next(s for s in sites if s.kind == "cage_farm"),
                        farm=next(s for s in sites if s.kind == "greenhouse"),
                        quiet=next(s for s in sites if s.kind == "port_terminal"))
    now_ms = int(fleet.now.timestamp() * 1000) // MIN_MS * MIN_MS
    envelopes = []
    for n, site in enumerate((fleet.ocean, fleet.farm)):
        for device in site.devices:
            step = device.template.interval_s * 1000
            times = range(now_ms - hours * 3_600_000, now_ms, step)
            readings = tuple(Reading(m, t, _wave(m, t, n + i))
                             for t in times for i, m in enumerate(device.template.series_metrics))
            for seq, first in enumerate(range(0, len(readings), 5000)):
                envelopes.append(Envelope(up_topic(site.id, device.id), encode_batch(
                    Batch(site.id, device.id, seq, readings[first:first + 5000])), None,
                    now_ms))
    offline = next(d for d in fleet.farm.devices if d.template.name == "soil")
    envelopes.append(Envelope(status_topic(fleet.farm.id, offline.id), encode_status(
        Status(fleet.farm.id, offline.id, DeviceState.OFFLINE, now_ms)), None, now_ms + 1))
    directory = DeviceDirectory(url)
    try:
        with psycopg.connect(url) as conn:
            Store(conn, LoadStrategy.COPY).write(prepare(
                envelopes, directory, limits=Limits(max_readings=10_000), now_ms=now_ms + 1))
    finally:
        directory.close()

    with psycopg.connect(url) as conn:
        for device, metric, sid in conn.execute(
                "SELECT s.device_id, s.metric, s.id FROM series s JOIN devices d "
                "ON d.id = s.device_id WHERE d.site_id = ANY(%s)",
                ([fleet.ocean.id, fleet.farm.id, fleet.quiet.id],)):
            fleet.series[(device, metric)] = sid
        sonde = f"{fleet.ocean.id}-sonde"
        do_series = fleet.series[(sonde, "dissolved_oxygen")]
        temp_series = fleet.series[(sonde, "water_temperature")]
        now = fleet.now
        alerts = {
            "hypoxia": (fleet.ocean.id, sonde, do_series, "hypoxia", "event", "critical",
                        "open", "dissolved oxygen 2.41 mg/L under 3 mg/L",
                        now - timedelta(hours=3), now - timedelta(minutes=2), None, 2.41, 2.1),
            "stuck": (fleet.ocean.id, sonde, temp_series, "sensor_fault", "fault", "warning",
                      "acknowledged", "water temperature stuck at 14.20 °C",
                      now - timedelta(hours=8), now - timedelta(hours=1), None, 14.2, 14.2),
            "frost": (fleet.farm.id, None, None, "frost_risk", "event", "warning", "closed",
                      "air temperature fell to 0.4 °C", now - timedelta(hours=20),
                      now - timedelta(hours=18), now - timedelta(hours=17), 2.5, 0.4),
            "storm": (fleet.quiet.id, None, None, "storm_wind", "event", "info", "open",
                      "wind 17.2 m/s at the quay", now - timedelta(hours=1),
                      now - timedelta(minutes=5), None, 17.2, 18.0),
        }
        for name, row in alerts.items():
            (site, device, series_id, rule, category, severity, state, message, opened,
             updated, closed, value, peak) = row
            acked = state == "acknowledged"
            fleet.alert_ids[name] = alert_id = conn.execute(
                """INSERT INTO alerts (site_id, device_id, series_id, rule, category, severity,
                       state, message, opened_at, updated_at, closed_at, value, peak_value,
                       acknowledged_by, acknowledged_at, ack_comment)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   RETURNING id""",
                (site, device, series_id, rule, category, severity, state, message, opened,
                 updated, closed, value, peak, "night-shift" if acked else None,
                 updated if acked else None, "diver checking" if acked else None)
            ).fetchone()[0]
            events = [(opened, "opened", "detector", None, value)]
            if acked:
                events.append((updated, "acknowledged", "night-shift", "diver checking", None))
            if closed:
                events.append((closed, "closed", "detector", None, value))
            conn.cursor().executemany(
                "INSERT INTO alert_events (alert_id, at, action, actor, note, value) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(alert_id, *event) for event in events])
        conn.cursor().executemany(
            "INSERT INTO anomalies (series_id, time, value, score, component, category) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [(do_series, now - timedelta(hours=3, minutes=-k), 2.4, 0.9, "range", "event")
             for k in range(0, 30, 5)]
            + [(temp_series, now - timedelta(hours=8, minutes=-k), 14.2, 0.7, "stuck", "fault")
               for k in range(0, 60, 10)])
        conn.commit()
    return fleet
