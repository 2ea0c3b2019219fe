"""What the agent does with its ``down/`` messages: apply configuration, run commands.

The publisher (``uplink.py``, the only module that talks to the broker) subscribes to
``tf/v1/{site}/{device}/down/#`` for every device the agent speaks for and hands each
message to ``Controller.submit``; the controller's thread decodes and acts, and queues
its answers in ``outbox``, which the publisher sends (QoS 1) when it is connected.

Configuration: a desired version is applied only if it is newer than the one applied
last (kept on disk, ``ControlState``), so a device that was offline applies the newest
when it returns and an old retained document never undoes a newer one; either way the
agent answers with its reported document (retained). A document the agent cannot apply
(an unknown metric...) is refused with the reason, and the previous version stays.

Commands: the id is recorded on disk *before* the command runs, so a re-delivered
command (QoS 1 is at least once; a reconnect re-sends) is answered with the stored
outcome and never runs twice, even across a restart or a crash mid-command. A command
whose expiry has passed is answered ``expired`` and not run.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tidefield.protocol import control
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.control import (
    Action,
    Command,
    CommandResult,
    CommandState,
    DesiredConfig,
    ReportedConfig,
    Settings,
)
from tidefield.protocol.errors import ProtocolError
from tidefield.protocol.mqtt import Message
from tidefield.protocol.topics import Channel, parse_topic

from .actuators import ActuatorError, Actuators

log = logging.getLogger(__name__)

KEEP_COMMANDS = 10_000  # ids remembered (the oldest are forgotten beyond this)


def _agent_version() -> str | None:
    """This agent's release: the lean wheel's version, else the whole project's."""
    from importlib.metadata import PackageNotFoundError, version

    for name in ("tidefield-edge", "tidefield"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


AGENT_VERSION = _agent_version()


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    retain: bool = False
    correlation_data: bytes | None = None


class ControlState:
    """The applied configuration versions and the command ids seen, in SQLite next to
    the queue (one small file; a commit per change, so a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS applied_config (
                device TEXT PRIMARY KEY, version INTEGER NOT NULL, settings TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS commands (
                id TEXT PRIMARY KEY, device TEXT NOT NULL, state TEXT NOT NULL,
                reason TEXT, value REAL, at_ms INTEGER NOT NULL);""")
        self._lock = threading.Lock()

    def applied(self, device: str) -> tuple[int, Settings]:
        with self._lock:
            row = self._db.execute("SELECT version, settings FROM applied_config "
                                   "WHERE device = ?", (device,)).fetchone()
        if row is None:
            return 0, Settings()
        return int(row[0]), control.settings_from_dict(json.loads(row[1]))

    def all_applied(self) -> dict[str, tuple[int, Settings]]:
        with self._lock:
            rows = self._db.execute("SELECT device FROM applied_config").fetchall()
        return {row[0]: self.applied(row[0]) for row in rows}

    def save_applied(self, device: str, version: int, settings: Settings) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO applied_config VALUES (?, ?, ?)",
                             (device, version, json.dumps(settings.to_dict())))

    def command(self, command_id: str) -> CommandResult | None:
        with self._lock:
            row = self._db.execute("SELECT device, state, reason, value, at_ms FROM commands "
                                   "WHERE id = ?", (command_id,)).fetchone()
        if row is None:
            return None
        return CommandResult("", row[0], command_id, CommandState(row[1]), row[4],
                             reason=row[2], value=row[3])

    def save_command(self, result: CommandResult) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO commands VALUES (?, ?, ?, ?, ?, ?)",
                             (result.id, result.device, result.state.value, result.reason,
                              result.value, result.time_ms))
            self._db.execute("DELETE FROM commands WHERE id IN (SELECT id FROM commands "
                             "ORDER BY at_ms DESC LIMIT -1 OFFSET ?)", (KEEP_COMMANDS,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Controller:
    """Acts on ``down/`` messages in its own thread (a Modbus write may take seconds; the
    publisher's thread never waits for one)."""

    def __init__(self, site: str, devices: list[str], state: ControlState,
                 actuators: Actuators, *, apply: Callable[[str, Settings], None],
                 known_metrics: dict[str, frozenset[str]] | None = None,
                 flush: Callable[[], None] | None = None,
                 reboot: Callable[[], None] | None = None,
                 update: Callable[[Command], None] | None = None) -> None:
        self.site = site
        self.devices = devices
        self.state = state
        self.actuators = actuators
        self._apply = apply
        self._known_metrics = known_metrics or {}
        self._flush = flush
        self._reboot = reboot
        self._update = update
        self._restart_after_answer = False
        self.inbox: queue.Queue[Message | None] = queue.Queue()
        self.outbox: queue.Queue[Outgoing] = queue.Queue()
        self.executed: list[str] = []  # command ids run in this process (for tests)

    def submit(self, message: Message) -> None:
        self.inbox.put(message)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            message = self.inbox.get()
            if message is None:
                return
            try:
                self.handle(message)
            except Exception:  # one message must not end the controller
                log.exception("down/ message on %s could not be handled", message.topic)

    def stop(self) -> None:
        self.inbox.put(None)

    def report_all(self) -> None:
        """Answer the applied configuration of every device (at start: the server learns
        what runs here, version 0 for a device never configured)."""
        for device in self.devices:
            version, settings = self.state.applied(device)
            self._report(ReportedConfig(self.site, device, version, settings, _now_ms()))

    # --- one message ------------------------------------------------------------------

    def handle(self, message: Message) -> None:
        try:
            topic = parse_topic(message.topic)
            if topic.channel is not Channel.DOWN or topic.device not in self.devices:
                raise ProtocolError(f"not one of this agent's down/ topics: {message.topic}")
            if topic.rest == control.CONFIG:
                if not message.payload:
                    return  # a retained document cleared: nothing to apply
                self._configure(control.decode_desired(message.payload, topic=topic))
            elif topic.rest == control.COMMAND:
                self._command(message, topic.device)
            else:
                raise ProtocolError(f"unknown down/ topic {message.topic}")
        except ProtocolError as exc:
            log.warning("refused a message on %s: %s (%s)", message.topic, exc.message,
                        exc.reason)

    def _configure(self, desired: DesiredConfig) -> None:
        device = desired.device
        version, settings = self.state.applied(device)
        if desired.version <= version:
            log.info("%s: configuration version %d is not newer than %d; kept", device,
                     desired.version, version)
            self._report(ReportedConfig(self.site, device, version, settings, _now_ms()))
            return
        problem = self._problem(device, desired.settings)
        if problem is None:
            try:
                self._apply(device, desired.settings)
            except (ValueError, KeyError) as exc:
                problem = str(exc)
        if problem is not None:
            log.warning("%s: configuration version %d refused: %s", device, desired.version,
                        problem)
            self._report(ReportedConfig(self.site, device, version, settings, _now_ms(),
                                        error=problem, refused=desired.version))
            return
        self.state.save_applied(device, desired.version, desired.settings)
        log.info("%s: configuration version %d applied", device, desired.version)
        self._report(ReportedConfig(self.site, device, desired.version, desired.settings,
                                    _now_ms()))

    def _problem(self, device: str, settings: Settings) -> str | None:
        known = self._known_metrics.get(device)
        named = set(settings.metrics or ()) | {m for m, _ in settings.thresholds}
        unknown = sorted(m for m in named if m not in METRICS
                         or (known is not None and m not in known))
        if unknown:
            return f"{device} reads no {', '.join(unknown)}"
        return None

    def _report(self, reported: ReportedConfig) -> None:
        reported = replace(reported, agent_version=AGENT_VERSION)
        self.outbox.put(Outgoing(control.reported_topic(self.site, reported.device),
                                 control.encode_reported(reported), retain=True))

    def _command(self, message: Message, device: str) -> None:
        try:
            command = control.decode_command(message.payload,
                                             topic=parse_topic(message.topic))
        except ProtocolError as exc:
            # answer when the id is known (the correlation data), so the sender learns why
            raw_id = (message.correlation_data or b"").decode("ascii", "replace")
            try:
                control.check_command_id(raw_id)
            except ProtocolError:
                raise exc from None
            self._answer(CommandResult(self.site, device, raw_id, CommandState.FAILED,
                                       _now_ms(), reason=f"{exc.reason}: {exc.message}"),
                         message)
            return
        seen = self.state.command(command.id)
        if seen is not None:
            log.info("%s: command %s seen before (%s); not run again", device, command.id,
                     seen.state)
            if seen.state is CommandState.DELIVERED:  # it was running when we stopped
                seen = replace(seen, state=CommandState.FAILED,
                               reason="interrupted: the agent stopped while it ran")
                self.state.save_command(seen)
            self._answer(replace(seen, site=self.site), message)
            return
        now = _now_ms()
        if command.expired(now):
            result = CommandResult(self.site, device, command.id, CommandState.EXPIRED, now,
                                   reason=f"arrived {(now - command.expires_ms) / 1000:.0f} s "
                                          f"after its expiry")
            self.state.save_command(result)
            log.warning("%s: command %s (%s) expired before it arrived; not run", device,
                        command.id, command.action)
            self._answer(result, message)
            return
        delivered = CommandResult(self.site, device, command.id, CommandState.DELIVERED, now)
        self.state.save_command(delivered)  # before running: a repeat never runs it again
        self._answer(delivered, message)
        self.executed.append(command.id)
        try:
            value = self._execute(command)
            result = CommandResult(self.site, device, command.id, CommandState.DONE,
                                   _now_ms(), value=value)
        except ActuatorError as exc:
            result = CommandResult(self.site, device, command.id, CommandState.FAILED,
                                   _now_ms(), reason=str(exc))
        self.state.save_command(result)
        log.info("%s: command %s (%s) %s%s", device, command.id, command.action,
                 result.state, f": {result.reason}" if result.reason else "")
        self._answer(result, message)
        if self._restart_after_answer and self._reboot is not None:
            self._restart_after_answer = False
            self._reboot()  # after the answer: the stop sends it before going offline

    def _execute(self, command: Command) -> float | None:
        device = command.device
        if command.action is Action.SET:
            assert command.actuator is not None
            on = command.state == "on" if command.state is not None else bool(command.value)
            self.actuators.switch(device, command.actuator, on, command.duration_s)
            return 1.0 if on else 0.0
        if command.action is Action.READ:
            assert command.actuator is not None
            return 1.0 if self.actuators.state(device, command.actuator) else 0.0
        if command.action is Action.SYNC_TIME:
            # the agent does not set the clock (that is the OS's NTP); it reports how far
            # its own is from the server's when the command was issued, in ms
            return float(_now_ms() - command.issued_ms)
        if command.action is Action.FLUSH_QUEUE:
            if self._flush is not None:
                self._flush()
            return None
        if command.action is Action.REBOOT:
            if self._reboot is None:
                raise ActuatorError("this agent cannot restart itself")
            self._restart_after_answer = True
            return None
        if command.action is Action.UPDATE:
            if self._update is None or self._reboot is None:
                raise ActuatorError("updates are not configured here (update.root, "
                                    "update.public_key)")
            from .update import UpdateError

            try:
                self._update(command)
            except UpdateError as exc:
                raise ActuatorError(str(exc)) from exc
            self._restart_after_answer = True  # the launcher starts the new release
            return None
        raise ActuatorError(f"unknown action {command.action}")

    def _answer(self, result: CommandResult, message: Message) -> None:
        # MQTT v5 request/response: answer where the request asked; a device may write
        # only its own reply/ topics, so anything else falls back to that
        own = control.result_topic(self.site, result.device)
        topic = message.response_topic if message.response_topic == own else own
        self.outbox.put(Outgoing(topic, control.encode_result(result),
                                 correlation_data=result.id.encode()))


def _now_ms() -> int:
    return int(time.time() * 1000)
