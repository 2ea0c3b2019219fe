"""Automatic responses under operator control: what an alert or warning switches on.

A rule may carry a ``response`` (``rules.Response``: the actuator, how long, its limits)
and, per site, a ``response_mode``: ``suggest`` (the default: the operator is told what
to do and does it from the site page or the command line) or ``automatic`` (issued at
once as a device command, within the limits: a run lasts at most ``max_on_minutes``,
starts no sooner than ``cooldown_minutes`` after the last run at the site ended, and only
in the local ``hours``). ``ResponsePlanner.decide`` turns the alerts opened in a step
into ``Decision``s (pure: the evaluation re-simulates with them); ``record`` issues the
automatic ones through the device-control commands (``server/control``: expiry,
idempotency by a command id derived from the alert) and writes every decision into the
alert's history as an ``updated`` event with a note, which the notifier sends on.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidefield.protocol.units import DAY_MS, HOUR_MS, MINUTE_MS

from .alerts import ACTOR, Alert, AlertOp
from .rules import RuleSet

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """One response to one opened alert."""

    alert: Alert
    at_ms: int
    device_id: str
    actuator: str
    duration_s: int
    automatic: bool  # issued as a command; False: suggested to the operator
    reason: str  # why it is (only) suggested, or the limit that shortened it

    @property
    def command_id(self) -> str:
        """The same alert's response at the same instant has the same id: a step replayed
        after a crash does not switch the actuator twice (``device_commands.id`` is the
        idempotency key)."""
        key = (f"{self.alert.key.site_id}:{self.alert.key.rule}:{self.alert.opened_ms}:"
               f"{self.at_ms}:{self.actuator}")
        return "resp-" + hashlib.sha256(key.encode()).hexdigest()[:24]

    @property
    def note(self) -> str:
        minutes = self.duration_s / 60.0
        what = f"{self.actuator} on for {minutes:g} min at {self.device_id}"
        if self.automatic:
            return f"automatic response: {what} (command {self.command_id})"
        return f"suggested response: {what} ({self.reason})"


class ResponsePlanner:
    """Decides the responses of opened alerts, remembering each site's last runs."""

    def __init__(self, ruleset: RuleSet, site_kinds: dict[str, str],
                 tz_offset_hours: float = 8.0) -> None:
        self.ruleset = ruleset
        self.site_kinds = site_kinds
        self.tz_offset_ms = tz_offset_hours * HOUR_MS
        self.runs: dict[tuple[str, str], int] = {}  # (site, actuator) -> end of last run, ms

    def decide(self, ops: Iterable[AlertOp]) -> list[Decision]:
        """The responses of the alerts these operations open."""
        return [d for op in ops if op.action == "opened"
                for d in self._respond(op.alert, op.time_ms, renewal=False)]

    def renew(self, active: Iterable[Alert], now_ms: int) -> list[Decision]:
        """Automatic runs again for alerts still on whose run has ended and whose site's
        cool-down has passed (aerators keep the water up while the warning or the
        hypoxia holds, with a pause between runs); suggestions are not repeated."""
        return [d for alert in active
                for d in self._respond(alert, now_ms, renewal=True) if d.automatic]

    def _respond(self, alert: Alert, now_ms: int, *, renewal: bool) -> list[Decision]:
        site = alert.key.site_id
        spec = self.ruleset.for_site(site, self.site_kinds.get(site)).get(alert.key.rule)
        if spec is None or spec.response is None:
            return []
        response = spec.response
        minutes = min(response.minutes, response.max_on_minutes)
        reason = "" if minutes == response.minutes else "max on-time"
        automatic = spec.response_mode == "automatic"
        last_end = self.runs.get((site, response.actuator))
        if renewal:
            if not automatic or last_end is None:
                return []  # only an automatic run already made is renewed
            reason = reason or "renewed: the alert holds"
        if not automatic:
            reason = "suggest mode"
        elif last_end is not None and now_ms < last_end:
            automatic, reason = False, "already running"
        elif last_end is not None and now_ms < last_end + response.cooldown_minutes * MINUTE_MS:
            automatic, reason = False, "cool-down"
        elif response.hours is not None and not self._in_hours(now_ms, response.hours):
            automatic, reason = False, "outside its hours"
        if automatic:
            self.runs[(site, response.actuator)] = now_ms + int(minutes * MINUTE_MS)
        return [Decision(alert, now_ms, response.device or f"{site}-gw", response.actuator,
                         int(minutes * 60), automatic, reason)]

    def _in_hours(self, t_ms: int, hours: tuple[float, float]) -> bool:
        lo, hi = hours
        hour = ((t_ms + self.tz_offset_ms) % DAY_MS) / HOUR_MS
        return lo <= hour < hi if lo <= hi else hour >= lo or hour < hi

    def remember(self, site_id: str, actuator: str, end_ms: int) -> None:
        """A run issued before this process started (its cool-down still counts)."""
        key = (site_id, actuator)
        self.runs[key] = max(self.runs.get(key, end_ms), end_ms)


STALE_MS = 15 * MINUTE_MS  # an alert older than this (a catch-up) switches nothing


def record(conn: psycopg.Connection, decisions: list[Decision], now_ms: int) -> int:
    """Issue the automatic decisions as device commands and note every decision in its
    alert's history (the alerts are stored: they have ids); returns the commands issued.
    Inside the caller's transaction, with the step's alerts. An alert of the past (the
    service catching up on stored history) is noted, never acted on."""
    from tidefield.server.control.store import ControlError, create_command

    issued = 0
    for decision in decisions:
        note = decision.note
        if decision.automatic and now_ms - decision.at_ms > STALE_MS:
            note = f"automatic response not issued: the alert is from the past ({note})"
        elif decision.automatic:
            exists = conn.execute("SELECT 1 FROM device_commands WHERE id = %s",
                                  (decision.command_id,)).fetchone()
            if exists is None:
                try:
                    with conn.transaction():
                        create_command(conn, device_id=decision.device_id, action="set",
                                       params={"actuator": decision.actuator, "state": "on",
                                               "duration_s": decision.duration_s},
                                       actor=f"{ACTOR}:{decision.alert.key.rule}",
                                       expires_in_s=900, command_id=decision.command_id)
                    issued += 1
                except ControlError as exc:  # no such device at the site: said in the note
                    note = f"automatic response not issued: {exc}"
                    log.warning("response not issued", extra={"alert": decision.alert.id,
                                                              "reason": str(exc)})
        if decision.alert.id is not None:
            conn.execute("INSERT INTO alert_events (alert_id, at, action, actor, note) "
                         "VALUES (%s, to_timestamp(%s / 1000.0), 'updated', %s, %s)",
                         (decision.alert.id, decision.at_ms, ACTOR, note))
    return issued
