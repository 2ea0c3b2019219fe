"""The messages on the wire, as our own frozen types (callbacks never see paho objects).

Times are integers: milliseconds since the Unix epoch, UTC. A device keeps its own
timestamps through any outage, so a backlog arrives as history, not as now.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Reading:
    metric: str
    time_ms: int
    value: float


@dataclass(frozen=True, slots=True)
class Batch:
    """A telemetry message: one device's readings, numbered by a per-device sequence.

    ``seq`` increases by one for every batch a device publishes (it survives restarts of
    the device, since the edge agent persists it), so the server can tell a re-delivered
    batch from a new one and a gap from silence.
    """

    site: str
    device: str
    seq: int
    readings: tuple[Reading, ...]
    schema: int = SCHEMA_VERSION


class DeviceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Status:
    """Birth (online) and last will (offline) of a device, published retained."""

    site: str
    device: str
    state: DeviceState
    time_ms: int
    interval_s: int | None = None  # how often the device means to report
    schema: int = SCHEMA_VERSION
