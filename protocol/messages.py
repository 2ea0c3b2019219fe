"""The messages on the wire, as our own frozen types (callbacks never see paho objects).

Times are integers: milliseconds since the Unix epoch, UTC. A device keeps its own
timestamps through any outage, so a backlog arrives as history, not as now.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The wire contract's version. What a build writes is SCHEMA_VERSION; what it reads is
# every version in SUPPORTED_SCHEMAS, which keeps the older ones: agents in the field are
# upgraded after the server, if at all, so a server reads what the agents before it
# wrote (tests/fixtures/wire/ keeps each version's payloads as those agents sent them, and
# tests/unit/test_wire_compat.py decodes them). A new version is added, never swapped in.
SCHEMA_VERSION = 1
SUPPORTED_SCHEMAS = frozenset({1})


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


@dataclass(frozen=True, slots=True)
class Receipt:
    """Ingest's word to a device that batches are stored (committed to the database),
    published on ``tf/v1/{site}/{device}/down/receipt`` after the commit.

    ``stored`` is sorted, disjoint, inclusive ranges of seq: the first range's end is
    the highest seq stored contiguously with the ones it starts from, the others are
    later seqs stored past a gap. The agent keeps a batch on its disk until a receipt
    names its seq (a PUBACK only says the broker has it, in memory). A receipt names
    what ingest committed since its last receipt to the device, whether new or already
    stored (a re-send), so a lost receipt is made good by the next re-send.
    """

    site: str
    device: str
    stored: tuple[tuple[int, int], ...]
    schema: int = SCHEMA_VERSION

    def covers(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.stored)


class AlertAction(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """A change of an alert, published on ``tf/v1/{site}/alerts`` with QoS 1.

    Delivery is at least once (a detector restarted after storing a change but before the
    broker acknowledged it sends the change again): ``event_id`` is unique per change, so
    a subscriber drops what it has seen. ``state`` is the alert's state when the notice
    was sent (an operator may have acknowledged it); ``time_ms`` is when the change
    happened in the data (the reading that opened, last confirmed or cleared it).
    """

    event_id: int
    alert_id: int
    action: AlertAction
    site: str
    device: str | None
    series_id: int | None
    rule: str
    category: str  # "fault": a sensor is broken; "event": the world is
    severity: str  # info, warning, critical
    state: str  # open, acknowledged, closed
    message: str
    time_ms: int
    opened_ms: int
    closed_ms: int | None = None
    value: float | None = None
    peak: float | None = None
    schema: int = SCHEMA_VERSION
