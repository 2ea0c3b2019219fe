"""Back to the field: a device's configuration (its twin) and commands, and its answers.

Topics (``topics.down_topic`` / ``topics.reply_topic``)::

    tf/v1/{site}/{device}/down/config     desired configuration, retained, QoS 1
    tf/v1/{site}/{device}/reply/config    reported configuration, retained, QoS 1
    tf/v1/{site}/{device}/down/command    a command, QoS 1, with MQTT v5 response topic,
                                          correlation data (the command id) and expiry
    tf/v1/{site}/{device}/reply/command   the command's progress and result, QoS 1

**Configuration.** The desired document carries a ``version`` that only grows. Being
retained, the newest version waits on the broker for a device that was offline; a device
applies a version only if it is newer than the one it applied last (kept on its disk), so
an old document delivered late never undoes a newer one. It answers with the reported
document: the version it runs now, the settings in effect, and ``error`` when it refused
the desired one (it keeps the previous version then).

**Commands.** Each has an ``id`` (its idempotency key: a device runs an id once, and
answers a repeat with the outcome it stored) and an ``expires`` time: a command that
arrives after it (queued while the device was offline) is answered ``expired`` and not
run. The device answers ``delivered`` on receipt, then ``done`` or ``failed`` with its
reason. Request and answers use MQTT v5 request/response: the command's response topic is
the device's ``reply/command`` and its correlation data is the id.

JSON only: these messages are small and rare, and anyone can read one with mosquitto_sub.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .codec import JSON, Limits, _field, _identity, _load
from .errors import MalformedPayload
from .messages import SCHEMA_VERSION
from .topics import Topic, check_id, down_topic, reply_topic

CONFIG = "config"
COMMAND = "command"
CONTENT_TYPE = JSON
LIMITS = Limits(max_payload_bytes=64 * 1024)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_ID_LENGTH = 64


def config_topic(site: str, device: str) -> str:
    return down_topic(site, device, CONFIG)


def command_topic(site: str, device: str) -> str:
    return down_topic(site, device, COMMAND)


def reported_topic(site: str, device: str) -> str:
    return reply_topic(site, device, CONFIG)


def result_topic(site: str, device: str) -> str:
    return reply_topic(site, device, COMMAND)


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Threshold:
    """A local rule's bounds for one metric (None: no bound on that side)."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """What a configuration document may set; None leaves the agent's own value.

    Per device: ``interval_s`` (sampling; for the gateway device, the agent's health
    interval), ``metrics`` (the enabled ones; None: all), ``thresholds`` (local rules).
    For the gateway device (the agent itself): ``log_level``, ``batch_max_readings``,
    ``batch_max_wait_s``.
    """

    interval_s: float | None = None
    metrics: tuple[str, ...] | None = None
    thresholds: tuple[tuple[str, Threshold], ...] = ()
    log_level: str | None = None
    batch_max_readings: int | None = None
    batch_max_wait_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.interval_s is not None:
            out["interval_s"] = self.interval_s
        if self.metrics is not None:
            out["metrics"] = list(self.metrics)
        if self.thresholds:
            out["thresholds"] = {m: {"low": t.low, "high": t.high} for m, t in self.thresholds}
        for name in ("log_level", "batch_max_readings", "batch_max_wait_s"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def settings_from_dict(body: object) -> Settings:
    """Validate a settings mapping (from the wire or from the API); MalformedPayload names
    the first bad field."""
    if not isinstance(body, dict):
        raise MalformedPayload("settings must be an object")
    known = {"interval_s", "metrics", "thresholds", "log_level", "batch_max_readings",
             "batch_max_wait_s"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise MalformedPayload(f"unknown setting(s) {', '.join(map(repr, unknown))}; "
                               f"known: {', '.join(sorted(known))}")
    interval = _number(body, "interval_s", low=0.1, high=86_400.0)
    metrics = body.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise MalformedPayload("setting 'metrics' must be a list of metric names")
        metrics = tuple(metrics)
    thresholds: list[tuple[str, Threshold]] = []
    raw = body.get("thresholds") or {}
    if not isinstance(raw, dict):
        raise MalformedPayload("setting 'thresholds' must map metric -> {low, high}")
    for metric, bounds in sorted(raw.items()):
        if not isinstance(bounds, dict) or set(bounds) - {"low", "high"}:
            raise MalformedPayload(f"threshold {metric!r} must be {{low, high}}")
        low = _number(bounds, "low")
        high = _number(bounds, "high")
        if low is not None and high is not None and low > high:
            raise MalformedPayload(f"threshold {metric!r}: low {low} is above high {high}")
        thresholds.append((metric, Threshold(low, high)))
    level = body.get("log_level")
    if level is not None and level not in LOG_LEVELS:
        raise MalformedPayload(f"setting 'log_level' must be one of {list(LOG_LEVELS)}")
    batch = body.get("batch_max_readings")
    if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool)
                              or not 1 <= batch <= 10_000):
        raise MalformedPayload("setting 'batch_max_readings' must be an integer 1..10000")
    return Settings(interval_s=interval, metrics=metrics, thresholds=tuple(thresholds),
                    log_level=level, batch_max_readings=batch,
                    batch_max_wait_s=_number(body, "batch_max_wait_s", low=0.0, high=3600.0))


def _number(body: dict[str, Any], name: str, *, low: float = -math.inf,
            high: float = math.inf) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or not low <= value <= high:
        raise MalformedPayload(f"setting {name!r} must be a number in [{low:g}, {high:g}], "
                               f"got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class DesiredConfig:
    site: str
    device: str
    version: int
    settings: Settings
    time_ms: int
    schema: int = SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class ReportedConfig:
    """What a device runs: ``version`` 0 is its own config file, untouched."""

    site: str
    device: str
    version: int
    settings: Settings
    time_ms: int
    error: str | None = None  # why the desired version (``refused``) was not applied
    refused: int | None = None
    agent_version: str | None = None  # the agent's release (the fleet's version view)
    schema: int = SCHEMA_VERSION


def encode_desired(config: DesiredConfig) -> bytes:
    return _dump({"v": config.schema, "site": config.site, "device": config.device,
                  "version": config.version, "t": config.time_ms,
                  "settings": config.settings.to_dict()})


def encode_reported(config: ReportedConfig) -> bytes:
    return _dump({"v": config.schema, "site": config.site, "device": config.device,
                  "version": config.version, "t": config.time_ms,
                  "settings": config.settings.to_dict(), "error": config.error,
                  "refused": config.refused, "agent": config.agent_version})


def decode_desired(payload: bytes, *, topic: Topic | None = None) -> DesiredConfig:
    body = _load(payload, CONTENT_TYPE, LIMITS)
    site, device = _identity(body, topic)
    return DesiredConfig(site, device, _version(body, "version"),
                         settings_from_dict(body.get("settings", {})),
                         _field(body, "t", (int,)))


def decode_reported(payload: bytes, *, topic: Topic | None = None) -> ReportedConfig:
    body = _load(payload, CONTENT_TYPE, LIMITS)
    site, device = _identity(body, topic)
    version = _field(body, "version", (int,))
    if version < 0:
        raise MalformedPayload("field 'version' must be 0 or more")
    refused = _field(body, "refused", (int,), optional=True)
    return ReportedConfig(site, device, version, settings_from_dict(body.get("settings", {})),
                          _field(body, "t", (int,)),
                          error=_field(body, "error", (str,), optional=True), refused=refused,
                          agent_version=_field(body, "agent", (str,), optional=True))


def _version(body: dict[str, Any], name: str) -> int:
    value = _field(body, name, (int,))
    if not 1 <= value < 2**62:
        raise MalformedPayload(f"field {name!r} must be 1 or more")
    return int(value)


# --- commands ------------------------------------------------------------------------------


class Action(StrEnum):
    SET = "set"  # params: actuator, state ("on"/"off") or value (a register), duration_s
    READ = "read"  # params: actuator
    REBOOT = "reboot"
    SYNC_TIME = "sync-time"
    FLUSH_QUEUE = "flush-queue"
    UPDATE = "update"  # params: url (https), version, sha256, signature (edge/update.py)


class CommandState(StrEnum):
    """A command's lifecycle. ``pending`` and ``sent`` are the server's own (stored, and
    published to the broker); a device answers the others."""

    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"


FINAL_STATES = frozenset({CommandState.DONE, CommandState.FAILED, CommandState.EXPIRED})
DEVICE_STATES = frozenset({CommandState.DELIVERED, *FINAL_STATES})


@dataclass(frozen=True, slots=True)
class Command:
    site: str
    device: str
    id: str  # idempotency key, unique per device
    action: Action
    issued_ms: int
    expires_ms: int
    actuator: str | None = None
    state: str | None = None  # set: "on" or "off"
    value: int | None = None  # set: a register value
    duration_s: float | None = None  # set "on": switch off again after this long
    # update: the release (a tidefield-edge wheel), its SHA-256 (hex) and the Ed25519
    # signature (base64) of release_message(version, sha256)
    url: str | None = None
    version: str | None = None
    sha256: str | None = None
    signature: str | None = None
    schema: int = SCHEMA_VERSION

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms


@dataclass(frozen=True, slots=True)
class CommandResult:
    site: str
    device: str
    id: str
    state: CommandState  # one of DEVICE_STATES
    time_ms: int
    reason: str | None = None
    value: float | None = None  # read: the actuator's state (1 on, 0 off) or register
    schema: int = SCHEMA_VERSION


def check_command_id(value: str) -> str:
    if not 8 <= len(value) <= MAX_ID_LENGTH or not all(
            c.isalnum() or c in "-_" for c in value) or not value.isascii():
        raise MalformedPayload(f"command id {value!r} must be 8..{MAX_ID_LENGTH} ASCII "
                               f"letters, digits, '-' or '_'")
    return value


def encode_command(command: Command) -> bytes:
    body: dict[str, Any] = {"v": command.schema, "site": command.site,
                            "device": command.device, "id": command.id,
                            "action": str(command.action), "issued": command.issued_ms,
                            "expires": command.expires_ms}
    for name in ("actuator", "state", "value", "duration_s", "url", "version", "sha256",
                 "signature"):
        if getattr(command, name) is not None:
            body[name] = getattr(command, name)
    return _dump(body)


def decode_command(payload: bytes, *, topic: Topic | None = None) -> Command:
    body = _load(payload, CONTENT_TYPE, LIMITS)
    site, device = _identity(body, topic)
    try:
        action = Action(str(body.get("action")))
    except ValueError:
        raise MalformedPayload(f"field 'action' must be one of {[a.value for a in Action]}"
                               ) from None
    command = Command(
        site, device, check_command_id(_field(body, "id", (str,))), action,
        issued_ms=_field(body, "issued", (int,)), expires_ms=_field(body, "expires", (int,)),
        actuator=_field(body, "actuator", (str,), optional=True),
        state=_field(body, "state", (str,), optional=True),
        value=_field(body, "value", (int,), optional=True),
        duration_s=_number(body, "duration_s", low=0.0, high=7 * 86_400.0),
        url=_field(body, "url", (str,), optional=True),
        version=_field(body, "version", (str,), optional=True),
        sha256=_field(body, "sha256", (str,), optional=True),
        signature=_field(body, "signature", (str,), optional=True))
    check_command(command)
    return command


def check_command(command: Command) -> Command:
    """What the fields of an action must be; MalformedPayload says what is missing."""
    if command.action in (Action.SET, Action.READ):
        if command.actuator is None:
            raise MalformedPayload(f"a {command.action} command needs 'actuator'")
        check_id(command.actuator, "actuator")
    if command.action is Action.SET:
        if (command.state is None) == (command.value is None):
            raise MalformedPayload("a set command needs 'state' (on/off) or 'value', "
                                   "not both")
        if command.state is not None and command.state not in ("on", "off"):
            raise MalformedPayload(f"'state' must be on or off, got {command.state!r}")
        if command.value is not None and not 0 <= command.value <= 0xFFFF:
            raise MalformedPayload(f"'value' {command.value} does not fit a register")
        if command.duration_s is not None and command.state != "on":
            raise MalformedPayload("'duration_s' goes with state 'on' only")
    if command.action is Action.UPDATE:
        if None in (command.url, command.version, command.sha256, command.signature):
            raise MalformedPayload("an update command needs url, version, sha256, signature")
        assert command.url is not None and command.version is not None
        if not command.url.startswith("https://"):
            raise MalformedPayload("an update is downloaded over https:// only")
        if not _RELEASE_VERSION.match(command.version):
            raise MalformedPayload(f"version {command.version!r} is not a release version")
        if not re.fullmatch(r"[0-9a-f]{64}", command.sha256 or ""):
            raise MalformedPayload("sha256 must be 64 lower-case hex digits")
    if command.expires_ms <= command.issued_ms:
        raise MalformedPayload("'expires' must be after 'issued'")
    return command


_RELEASE_VERSION = re.compile(r"^[0-9]+(\.[0-9]+){0,3}([a-z0-9.+-]{0,20})$")


def release_message(version: str, sha256: str) -> bytes:
    """What a release's Ed25519 signature signs: the distribution, version and hash."""
    return f"tidefield-edge\n{version}\n{sha256}\n".encode()


def encode_result(result: CommandResult) -> bytes:
    return _dump({"v": result.schema, "site": result.site, "device": result.device,
                  "id": result.id, "state": str(result.state), "t": result.time_ms,
                  "reason": result.reason, "value": result.value})


def decode_result(payload: bytes, *, topic: Topic | None = None) -> CommandResult:
    body = _load(payload, CONTENT_TYPE, LIMITS)
    site, device = _identity(body, topic)
    state = body.get("state")
    if state not in {str(s) for s in DEVICE_STATES}:
        raise MalformedPayload(f"field 'state' must be one of "
                               f"{sorted(str(s) for s in DEVICE_STATES)}, got {state!r}")
    value = _field(body, "value", (int, float), optional=True)
    return CommandResult(site, device, check_command_id(_field(body, "id", (str,))),
                         CommandState(state), _field(body, "t", (int,)),
                         reason=_field(body, "reason", (str,), optional=True),
                         value=float(value) if value is not None else None)


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


__all__ = [
    "COMMAND", "CONFIG", "DEVICE_STATES", "FINAL_STATES", "Action", "Command",
    "CommandResult", "CommandState", "DesiredConfig", "ReportedConfig", "Settings",
    "Threshold", "check_command", "check_command_id", "command_topic", "config_topic",
    "decode_command", "decode_desired", "decode_reported", "decode_result",
    "encode_command", "encode_desired", "encode_reported", "encode_result",
    "release_message", "reported_topic", "result_topic", "settings_from_dict",
]
