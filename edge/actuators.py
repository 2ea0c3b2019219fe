"""Actuators the agent switches (aerators, valves, pumps, fans), and the local safety that
holds with or without a network.

Each actuator is a Modbus coil or holding register: ``modbus_tcp`` through the lean
client (``drivers/mbap.py``: function 05 for a coil, 06 for a register), ``modbus_rtu``
through pymodbus (imported on first use, as for the RTU driver). Its config::

    actuators:
      - name: aerator            # what commands call it
        device: oc-001-gw        # whose down/command addresses it (default: the gateway)
        type: modbus_tcp
        host: 192.168.1.20
        unit: 200
        coil: 0                  # or register: 10 (then "on" writes on_value, "off" 0)
        max_on_s: 3600           # switched off after this long, whatever was asked
        min_off_s: 300           # not switched on again sooner (compressors, pumps)
        fail_safe: "off"         # what the agent writes when it starts

Safety lives here, not in the server: a valve opened for ten minutes closes after ten
minutes (and never later than ``max_on_s``) even when the broker went away after the
"on" command; the ``safety`` thread checks every ``SAFETY_TICK_S`` and retries a failed
switch-off at that pace until it succeeds. At start every actuator is put in its
``fail_safe`` state before anything else, and the start counts as the moment it went
off (the agent cannot know how long it was off before, so it assumes the least).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MinLen

from .drivers.base import FORBID_EXTRA, DeviceId
from .drivers.mbap import MbapClient, ModbusExceptionAnswer, ModbusLinkError

log = logging.getLogger(__name__)

SAFETY_TICK_S = 0.2


@dataclass(frozen=True, kw_only=True)
class _ActuatorCommon:
    __pydantic_config__: ClassVar[dict[str, Any]] = FORBID_EXTRA

    name: DeviceId  # same grammar as ids: a-z, 0-9, -
    device: DeviceId | None = None  # default: the site's gateway
    unit: Annotated[int, Ge(0), Le(247)] = 1
    coil: Annotated[int, Ge(0), Le(0xFFFF)] | None = None
    register: Annotated[int, Ge(0), Le(0xFFFF)] | None = None
    on_value: Annotated[int, Ge(1), Le(0xFFFF)] = 1  # what "on" writes to a register
    timeout_s: Annotated[float, Gt(0), Le(60)] = 3.0
    max_on_s: Annotated[float, Gt(0), Le(7 * 86_400)] = 3600.0
    min_off_s: Annotated[float, Ge(0), Le(86_400)] = 0.0
    fail_safe: Literal["off", "on"] = "off"

    def __post_init__(self) -> None:
        if (self.coil is None) == (self.register is None):
            raise ValueError(f"actuator {self.name}: give coil or register, not both")


@dataclass(frozen=True, kw_only=True)
class ModbusTcpActuator(_ActuatorCommon):
    type: Literal["modbus_tcp"] = "modbus_tcp"
    host: Annotated[str, MinLen(1)]
    port: Annotated[int, Ge(1), Le(65535)] = 502


@dataclass(frozen=True, kw_only=True)
class ModbusRtuActuator(_ActuatorCommon):
    type: Literal["modbus_rtu"] = "modbus_rtu"
    port: Annotated[str, MinLen(1)]
    baudrate: Annotated[int, Gt(0)] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


ActuatorConfig = ModbusTcpActuator | ModbusRtuActuator


class ActuatorError(Exception):
    """A switch was refused (safety) or failed (the device); the message says which."""


class _RtuWriter:
    """pymodbus's serial client behind the lean client's write interface."""

    def __init__(self, config: ModbusRtuActuator) -> None:
        from pymodbus.client import ModbusSerialClient

        self._client = ModbusSerialClient(config.port, baudrate=config.baudrate,
                                          parity=config.parity, stopbits=config.stopbits,
                                          timeout=config.timeout_s, retries=0)
        self._name = config.port

    def _check(self, response: Any) -> None:
        if response.isError():
            raise ModbusExceptionAnswer(getattr(response, "exception_code", -1))

    def write_coil(self, address: int, on: bool, unit: int) -> None:
        if not self._client.connected and not self._client.connect():
            raise ModbusLinkError(f"cannot open {self._name}")
        self._check(self._client.write_coil(address, on, device_id=unit))

    def write_register(self, address: int, value: int, unit: int) -> None:
        if not self._client.connected and not self._client.connect():
            raise ModbusLinkError(f"cannot open {self._name}")
        self._check(self._client.write_register(address, value, device_id=unit))

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


class Actuator:
    """One actuator, its state as the agent last wrote it, and its safety timers. Not
    thread-safe by itself: ``Actuators`` holds the lock."""

    def __init__(self, config: ActuatorConfig, device: str,
                 clock: Any = time.monotonic) -> None:
        self.config = config
        self.device = device
        self._clock = clock
        self.on = config.fail_safe == "on"
        self.on_since: float | None = None
        self.off_since: float = clock()
        self.off_at: float | None = None  # when it must switch off
        self.known = False  # the device confirmed the last write
        if isinstance(config, ModbusTcpActuator):
            self._writer: Any = MbapClient(config.host, config.port, config.timeout_s)
        else:
            self._writer = None  # pymodbus on first use

    def _write(self, on: bool) -> None:
        config = self.config
        if self._writer is None:
            assert isinstance(config, ModbusRtuActuator)
            self._writer = _RtuWriter(config)
        try:
            if config.coil is not None:
                self._writer.write_coil(config.coil, on, config.unit)
            else:
                assert config.register is not None
                self._writer.write_register(config.register, config.on_value if on else 0,
                                            config.unit)
        except (ModbusLinkError, ModbusExceptionAnswer, OSError) as exc:
            self.known = False
            raise ActuatorError(f"{config.name}: the write failed: {exc}") from exc
        self.known = True

    def switch(self, on: bool, duration_s: float | None = None) -> float | None:
        """Switch, within the safety limits; the time it will switch off by itself (s from
        now) when turned on. ActuatorError when refused or failed."""
        config, now = self.config, self._clock()
        if on:
            resting = now - self.off_since
            if not self.on and resting < config.min_off_s:
                raise ActuatorError(
                    f"{config.name}: off for {resting:.0f} s, its minimum off-time is "
                    f"{config.min_off_s:g} s; try again in {config.min_off_s - resting:.0f} s")
            run_s = min(duration_s or config.max_on_s, config.max_on_s)
            self._write(True)
            if not self.on:
                self.on_since = now
            self.on, self.off_at = True, now + run_s
            return run_s
        self._write(False)
        if self.on:
            self.off_since = now
        self.on, self.on_since, self.off_at = False, None, None
        return None

    def due_off(self) -> bool:
        return self.on and self.off_at is not None and self._clock() >= self.off_at

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class Actuators:
    """Every actuator of the agent, by name, and the safety thread."""

    def __init__(self, configs: tuple[ActuatorConfig, ...], gateway: str) -> None:
        self._lock = threading.Lock()
        self.by_name = {c.name: Actuator(c, c.device or gateway) for c in configs}
        self._pending_fail_safe = set(self.by_name)

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def get(self, device: str, name: str) -> Actuator:
        actuator = self.by_name.get(name)
        if actuator is None or actuator.device != device:
            names = [n for n, a in self.by_name.items() if a.device == device]
            raise ActuatorError(f"{device} has no actuator {name!r} (it has: "
                                f"{', '.join(names) or 'none'})")
        return actuator

    def switch(self, device: str, name: str, on: bool, duration_s: float | None = None
               ) -> float | None:
        with self._lock:
            actuator = self.get(device, name)
            self._pending_fail_safe.discard(name)
            return actuator.switch(on, duration_s)

    def state(self, device: str, name: str) -> bool:
        with self._lock:
            return self.get(device, name).on

    def enforce(self) -> None:
        """One safety pass: the fail-safe state not yet written, and every actuator
        whose time is up switched off (retried each pass until the device takes it)."""
        with self._lock:
            for name in sorted(self._pending_fail_safe):
                actuator = self.by_name[name]
                try:
                    actuator.switch(actuator.config.fail_safe == "on")
                    self._pending_fail_safe.discard(name)
                    log.info("%s: fail-safe state %s written", name, actuator.config.fail_safe)
                except ActuatorError as exc:
                    log.debug("%s: fail-safe state not written yet: %s", name, exc)
            for name, actuator in self.by_name.items():
                if actuator.due_off():
                    try:
                        actuator.switch(False)
                        log.info("%s: switched off, its on-time is up", name)
                    except ActuatorError as exc:
                        log.warning("%s: could not switch off at the end of its on-time "
                                    "(%s); retrying", name, exc)

    def run(self, stop: threading.Event) -> None:
        """The safety thread: until ``stop``."""
        while True:
            try:
                self.enforce()
            except Exception:  # the safety loop must outlive any one failure
                log.exception("safety pass failed")
            if stop.wait(SAFETY_TICK_S):
                return

    def close(self) -> None:
        with self._lock:
            for actuator in self.by_name.values():
                actuator.close()
