"""Automatic responses under operator control: what an alert or warning switches on.

A rule may carry a ``response`` (``rules.Response``: the actuator, how long, its limits)
and, per site, a ``response_mode``: ``suggest`` (the default: the operator is told what
to do and confirms it from the alert's dashboard view, the API or the message's link)
or ``automatic`` (issued at once as a device command, within the limits: a run lasts at
most ``max_on_minutes``, starts no sooner than ``cooldown_minutes`` after the last run at
the site ended, and only in the local ``hours``). ``ResponsePlanner.decide`` turns the
alerts opened in a step into ``Decision``s (pure: the evaluation re-simulates with them);
``record`` issues the automatic ones through the device-control commands
(``server/control``: expiry, idempotency by a command id derived from the alert), stores
the suggestions (``alert_responses``, migration 0017) and writes every decision into the
alert's history as an ``updated`` event with a note, which the notifier sends on.
``confirm`` is an operator taking a suggestion: the same command an automatic run would
issue, once however often it is confirmed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
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
# a response command not delivered within this is not run: by then the operator or the
# detector has seen what the water did since
COMMAND_EXPIRY_S = 900


def issue_command(conn: psycopg.Connection, *, device_id: str, actuator: str,
                  duration_s: int, actor: str, command_id: str) -> bool:
    """The device command of a response, automatic or confirmed (one shape for both):
    ``set`` the actuator ``on`` for ``duration_s``. False when a command of this id was
    issued already (``device_commands.id`` is the idempotency key). Raises the control
    store's ``ControlError`` when the device cannot take it (retired, not at the site)."""
    from tidefield.server.control.store import create_command

    exists = conn.execute("SELECT 1 FROM device_commands WHERE id = %s",
                          (command_id,)).fetchone()
    if exists is not None:
        return False
    with conn.transaction():
        create_command(conn, device_id=device_id, action="set",
                       params={"actuator": actuator, "state": "on", "duration_s": duration_s},
                       actor=actor, expires_in_s=COMMAND_EXPIRY_S, command_id=command_id)
    return True


def _supersede(conn: psycopg.Connection, site_id: str, actuator: str, command_id: str,
               *, except_id: int | None = None) -> None:
    """Suggestions of this actuator at this site still waiting are superseded: it was just
    switched on another way, and confirming them would run it again at once."""
    conn.execute("""UPDATE alert_responses SET state = 'superseded', ended_at = now(),
                                               superseded_by = %s
                    WHERE site_id = %s AND actuator = %s AND state = 'suggested'
                      AND id IS DISTINCT FROM %s""",
                 (command_id, site_id, actuator, except_id))


def record(conn: psycopg.Connection, decisions: list[Decision], now_ms: int) -> int:
    """Issue the automatic decisions as device commands, store the suggestions so they can
    be confirmed (``alert_responses``), and note every decision in its alert's history
    (the alerts are stored: they have ids); returns the commands issued. Inside the
    caller's transaction, with the step's alerts. An alert of the past (the service
    catching up on stored history) is noted, never acted on."""
    from tidefield.server.control.store import ControlError

    issued = 0
    for decision in decisions:
        note = decision.note
        site = decision.alert.key.site_id
        if decision.automatic and now_ms - decision.at_ms > STALE_MS:
            note = f"automatic response not issued: the alert is from the past ({note})"
        elif decision.automatic:
            try:
                if issue_command(conn, device_id=decision.device_id,
                                 actuator=decision.actuator, duration_s=decision.duration_s,
                                 actor=f"{ACTOR}:{decision.alert.key.rule}",
                                 command_id=decision.command_id):
                    issued += 1
                    _supersede(conn, site, decision.actuator, decision.command_id)
            except ControlError as exc:  # no such device at the site: said in the note
                note = f"automatic response not issued: {exc}"
                log.warning("response not issued", extra={"alert": decision.alert.id,
                                                          "reason": str(exc)})
        elif decision.alert.id is not None:
            # an alert already closed (a catch-up) stores its suggestion as expired
            conn.execute(
                """INSERT INTO alert_responses (alert_id, site_id, device_id, actuator,
                                                duration_s, command_id, reason, suggested_at,
                                                state, ended_at)
                   SELECT a.id, a.site_id, %(device)s, %(actuator)s, %(duration)s, %(command)s,
                          %(reason)s, to_timestamp(%(at)s / 1000.0),
                          CASE WHEN a.state = 'closed' THEN 'expired' ELSE 'suggested' END,
                          CASE WHEN a.state = 'closed' THEN a.closed_at END
                   FROM alerts a WHERE a.id = %(alert)s
                   ON CONFLICT (command_id) DO NOTHING""",
                {"device": decision.device_id, "actuator": decision.actuator,
                 "duration": decision.duration_s, "command": decision.command_id,
                 "reason": decision.reason, "at": decision.at_ms,
                 "alert": decision.alert.id})
        if decision.alert.id is not None:
            conn.execute("INSERT INTO alert_events (alert_id, at, action, actor, note) "
                         "VALUES (%s, to_timestamp(%s / 1000.0), 'updated', %s, %s)",
                         (decision.alert.id, decision.at_ms, ACTOR, note))
    return issued


# --- suggestions an operator confirms (the API, the dashboard, a message's link) ---------

@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A row of ``alert_responses`` (migration 0017)."""

    id: int
    alert_id: int
    site_id: str
    device_id: str
    actuator: str
    duration_s: int
    command_id: str
    reason: str
    suggested_at: datetime
    state: str
    confirmed_by: str | None
    confirmed_at: datetime | None
    confirmed_via: str | None
    ended_at: datetime | None
    superseded_by: str | None

    @property
    def what(self) -> str:
        return f"{self.actuator} on for {self.duration_s / 60.0:g} min at {self.device_id}"


_RESPONSE_SELECT = (f"SELECT {', '.join('r.' + f for f in StoredResponse.__dataclass_fields__)} "
                    "FROM alert_responses r")


class ConfirmRefused(Exception):
    """The response cannot be confirmed any more; the message says why (the API: 409)."""


class ConfirmFailed(Exception):
    """The command could not be issued (the device is gone); the message says why (422)."""


def stored_responses(conn: psycopg.Connection, alert_id: int) -> list[StoredResponse]:
    return [StoredResponse(*row) for row in conn.execute(
        _RESPONSE_SELECT + " WHERE r.alert_id = %s ORDER BY r.id", (alert_id,))]


def stored_response(conn: psycopg.Connection, response_id: int) -> StoredResponse | None:
    row = conn.execute(_RESPONSE_SELECT + " WHERE r.id = %s", (response_id,)).fetchone()
    return StoredResponse(*row) if row else None


def confirm(conn: psycopg.Connection, response_id: int, *, actor: str, via: str
            ) -> tuple[StoredResponse, bool]:
    """Confirm a suggested response: issue its command as an automatic run would (same
    shape, the command id fixed when it was suggested), mark it confirmed, supersede the
    other waiting suggestions of that actuator at the site, note it in the alert's history.
    Returns the row and whether this call issued the command: a response confirmed already
    is returned as it is (confirming twice issues one command). Raises ``ConfirmRefused``
    when its alert is closed or it was superseded. In the caller's transaction; the caller
    checked the right to act on the site (and audits)."""
    from tidefield.server.control.store import ControlError

    # the alert first, then the response: the same order as closing (alert, then trigger)
    found = conn.execute("""SELECT a.state FROM alert_responses r JOIN alerts a
                            ON a.id = r.alert_id WHERE r.id = %s FOR UPDATE OF a""",
                         (response_id,)).fetchone()
    response = stored_response(conn, response_id)
    if found is None or response is None:
        raise LookupError(f"no response {response_id}")
    if response.state == "confirmed":
        return response, False
    if found[0] == "closed" or response.state == "expired":
        raise ConfirmRefused(f"alert {response.alert_id} is closed: its suggestion expired")
    if response.state == "superseded":
        raise ConfirmRefused(f"response {response_id} was superseded by command "
                             f"{response.superseded_by}")
    try:
        issued = issue_command(conn, device_id=response.device_id,
                               actuator=response.actuator, duration_s=response.duration_s,
                               actor=actor, command_id=response.command_id)
    except ControlError as exc:
        raise ConfirmFailed(str(exc)) from None
    conn.execute("""UPDATE alert_responses SET state = 'confirmed', confirmed_by = %s,
                        confirmed_at = now(), confirmed_via = %s WHERE id = %s""",
                 (actor, via, response_id))
    _supersede(conn, response.site_id, response.actuator, response.command_id,
               except_id=response_id)
    conn.execute("INSERT INTO alert_events (alert_id, action, actor, note) "
                 "VALUES (%s, 'updated', %s, %s)",
                 (response.alert_id, actor, f"suggested response confirmed through {via}: "
                                            f"{response.what} (command {response.command_id})"))
    confirmed = stored_response(conn, response_id)
    assert confirmed is not None  # locked above through its alert
    return confirmed, issued
