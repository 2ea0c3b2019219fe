"""Alerts held during maintenance: while a technician works on a site or a device
(``db.maintenance``), the detector does not open the alerts it would open there.

A held alert whose condition outlasts the window opens at its first qualifying reading
after the window (and carries on as any alert); one whose condition clears within the
window is never stored. Alerts already open when a window starts are left alone: the
operators knew of them before the work began.

What a window covers: a site-wide window every alert of the site; a device's window the
alerts of its series, and a site rule's alert (hypoxia...) whose firing series are all
the device's. Held alerts live in memory only: after a restart, a condition that began
in a window stays unreported until it clears and comes back (the readings stay flagged).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import psycopg

from tidefield.server.db.maintenance import Window, windows

from .alerts import Alert, AlertOp
from .engine import Engine

# windows are looked up this far behind the step, for late readings
LOOK_BEHIND = timedelta(days=30)


class MaintenanceHold:
    def __init__(self) -> None:
        self.windows: list[Window] = []
        self.held: dict[int, Alert] = {}  # id(alert) -> alert, while held

    def refresh(self, conn: psycopg.Connection, sites: list[str], until_ms: int) -> None:
        """The windows of these sites up to ``until_ms`` (once per detector step)."""
        until = datetime.fromtimestamp(until_ms / 1000, UTC)
        self.windows = windows(conn, sites=sites, since=until - LOOK_BEHIND,
                               until=until)

    def _covered(self, alert: Alert, devices: set[str], time_ms: int) -> bool:
        at = datetime.fromtimestamp(time_ms / 1000, UTC)
        return any(w.covers(alert.key.site_id, devices, at) for w in self.windows)

    def hold_in_maintenance(self, engine: Engine, ops: Iterable[AlertOp]) -> list[AlertOp]:
        """The operations to store: those of alerts held in a window left out."""
        if not self.windows and not self.held:
            return list(ops)
        kept: list[AlertOp] = []
        for op in ops:
            alert = op.alert
            held = id(alert) in self.held
            if not held and op.action != "opened":
                kept.append(op)
                continue
            devices = _devices_of(engine, alert)
            if self._covered(alert, devices, op.time_ms):
                if op.action == "closed":
                    self.held.pop(id(alert), None)
                else:
                    self.held[id(alert)] = alert
                continue
            if held:
                del self.held[id(alert)]
                if op.action == "closed":  # nothing qualified after the window
                    continue
                alert.opened_ms = op.time_ms  # it opens now, after the window
                kept.append(AlertOp("opened", alert, op.time_ms, op.value))
                continue
            kept.append(op)
        return kept


def _devices_of(engine: Engine, alert: Alert) -> set[str]:
    if alert.key.device_id is not None:
        return {alert.key.device_id}
    return {engine.detector.series[engine.rules.instances[k].row].device_id
            for k in alert.members}
