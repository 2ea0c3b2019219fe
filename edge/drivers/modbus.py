"""Modbus TCP and Modbus RTU (RS-485) devices, with the register map in the config.

Each metric names where it lives: ``address``, ``kind`` (holding or input registers),
``type`` (int16, uint16, int32, uint32, float32), ``word_order`` for 32-bit types
(``big``: high word first, "ABCD"; ``little``: low word first, "CDAB"), then
``value = raw * scale + offset`` in the catalog's unit. ``invalid`` lists raw register
values that mean "no reading" (0xFFFF, 0x7FFF, ...): such a value, a NaN, or a value
outside the catalog's physical range is reported as a fault and not queued.

Registers next to each other are read in one request (at most 125 registers). Devices
on the same TCP endpoint or serial port share one connection, one request at a time,
as an RS-485 line needs; drivers on one serial port must use the same serial settings.

Modbus TCP uses the lean client in ``mbap.py`` (why: see there); Modbus RTU uses pymodbus,
imported when the first serial line is opened, so an agent without RTU drivers never
loads it. Modbus RTU also needs pyserial (``pip install pymodbus[serial]``).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MinLen

from tidefield.protocol.catalog import METRICS
from tidefield.protocol.messages import Reading

from ..errors import DeviceUnavailable, DriverUnusable
from .base import FORBID_EXTRA, DriverConfig, Fault, FaultSink, checked, register
from .mbap import (
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    MbapClient,
    ModbusConnectError,
    ModbusExceptionAnswer,
    ModbusLinkError,
)

log = logging.getLogger(__name__)

MAX_REGISTERS_PER_READ = 125  # the Modbus limit for function codes 03 and 04

_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}

# Exception codes a device (or a gateway in front of it) answers with.
_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "device failure", 5: "acknowledge", 6: "device busy",
                    10: "gateway path unavailable", 11: "gateway target failed to respond"}


@dataclass(frozen=True, kw_only=True)
class Register:
    """Where one metric lives and how to turn its registers into a value."""

    __pydantic_config__: ClassVar[dict[str, Any]] = FORBID_EXTRA

    address: Annotated[int, Ge(0), Le(0xFFFF)]
    kind: Literal["holding", "input"] = "holding"
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "uint16"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    invalid: tuple[int, ...] = ()  # raw values meaning "no reading"

    @property
    def width(self) -> int:
        return _WIDTH[self.type]

    def __post_init__(self) -> None:
        if self.address + self.width > 0x10000:
            raise ValueError(f"a {self.type} at address {self.address} runs past 0xFFFF")
        limit = 1 << (16 * self.width)
        for value in self.invalid:
            if not 0 <= value < limit:
                raise ValueError(f"invalid value {value} does not fit a {self.type} "
                                 f"(raw register values are 0..{limit - 1:#x})")

    def decode(self, words: list[int]) -> tuple[int, float | None]:
        """(raw value, value in the metric's unit); None when raw is an invalid sentinel."""
        return self.decoder()(words, 0)

    def decoder(self) -> Callable[[list[int], int], tuple[int, float | None]]:
        """``decode`` as a function of (registers, index of this register's first word),
        specialised once for this register: drivers call it on every poll."""
        invalid = frozenset(self.invalid)
        scale, offset, kind = self.scale, self.offset, self.type
        big = self.word_order == "big"
        unpack = struct.Struct(">f").unpack

        def decode(words: list[int], i: int) -> tuple[int, float | None]:
            if kind in ("int16", "uint16"):
                raw = words[i]
            elif big:
                raw = (words[i] << 16) | words[i + 1]
            else:
                raw = (words[i + 1] << 16) | words[i]
            if raw in invalid:
                return raw, None
            if kind == "float32":
                return raw, unpack(raw.to_bytes(4, "big"))[0] * scale + offset
            if kind == "int16" and raw & 0x8000:
                raw_signed = raw - 0x10000
            elif kind == "int32" and raw & 0x8000_0000:
                raw_signed = raw - 0x1_0000_0000
            else:
                raw_signed = raw
            # Integer registers hold decimal fixed point: drop the float noise of the
            # scaling (253 * 0.1 is 25.3, not 25.300000000000001).
            return raw, round(raw_signed * scale + offset, 9)

        return decode


@dataclass(frozen=True, kw_only=True)
class _ModbusCommon(DriverConfig):
    unit: Annotated[int, Ge(0), Le(247)] = 1  # Modbus unit (slave) id
    timeout_s: Annotated[float, Gt(0), Le(60)] = 3.0
    registers: Annotated[dict[str, Register], MinLen(1)]  # metric -> register

    def metric_fields(self) -> dict[str, str]:
        return {metric: f"registers.{metric}" for metric in self.registers}


@dataclass(frozen=True, kw_only=True)
class ModbusTcpConfig(_ModbusCommon):
    type: Literal["modbus_tcp"] = "modbus_tcp"
    host: Annotated[str, MinLen(1)]
    port: Annotated[int, Ge(1), Le(65535)] = 502


@dataclass(frozen=True, kw_only=True)
class ModbusRtuConfig(_ModbusCommon):
    type: Literal["modbus_rtu"] = "modbus_rtu"
    port: Annotated[str, MinLen(1)]  # serial device, e.g. /dev/ttyUSB0
    baudrate: Annotated[int, Gt(0)] = 9600
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


@dataclass(frozen=True, slots=True)
class _Block:
    """One read request: ``count`` registers of ``kind`` from ``start``."""

    kind: str
    start: int
    count: int
    fields: tuple[tuple[str, Register], ...]


def plan_reads(registers: dict[str, Register]) -> list[_Block]:
    """Group the register map into as few requests as possible, never reading an address
    the map does not name (devices answer 'illegal data address' to gaps)."""
    blocks: list[_Block] = []
    for kind in ("holding", "input"):
        fields = sorted(((m, r) for m, r in registers.items() if r.kind == kind),
                        key=lambda item: item[1].address)
        group: list[tuple[str, Register]] = []
        start = end = 0
        for metric, reg in fields:
            reg_end = reg.address + reg.width
            if group and reg.address <= end and max(end, reg_end) - start <= MAX_REGISTERS_PER_READ:
                group.append((metric, reg))
                end = max(end, reg_end)
                continue
            if group:
                blocks.append(_Block(kind, start, end - start, tuple(group)))
            group, start, end = [(metric, reg)], reg.address, reg_end
        if group:
            blocks.append(_Block(kind, start, end - start, tuple(group)))
    return blocks


# --- shared connections --------------------------------------------------------------


class _PymodbusClient:
    """pymodbus's client (Modbus RTU) behind ``MbapClient``'s interface."""

    def __init__(self, client: Any, name: str) -> None:
        from pymodbus.exceptions import ModbusException

        self._client, self._name, self._errors = client, name, ModbusException

    def read_registers(self, function: int, start: int, count: int, unit: int) -> list[int]:
        client = self._client
        if not client.connected and not client.connect():
            raise ModbusConnectError(f"cannot connect to {self._name}")
        read = (client.read_holding_registers if function == READ_HOLDING_REGISTERS
                else client.read_input_registers)
        try:
            response = read(start, count=count, device_id=unit)
        except self._errors as exc:
            self.close()  # a late answer would be taken for the next request's
            raise ModbusLinkError(str(exc)) from exc
        if response.isError():
            raise ModbusExceptionAnswer(getattr(response, "exception_code", -1))
        registers = list(response.registers)
        if len(registers) != count:
            raise ModbusLinkError(f"{len(registers)} registers returned, {count} asked")
        return registers

    def close(self) -> None:
        self._client.close()


class _Line:
    """One connection (a TCP endpoint or a serial port) and the lock that serialises the
    requests of every device on it."""

    def __init__(self, name: str, make_client: Callable[[], Any]) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.users = 0
        self._make_client = make_client
        self._client: Any = None

    def read(self, block: _Block, unit: int, device_id: str) -> list[int]:
        """Registers of ``block`` (call with ``lock`` held)."""
        if self._client is None:
            self._client = self._make_client()
        function = (READ_HOLDING_REGISTERS if block.kind == "holding"
                    else READ_INPUT_REGISTERS)
        try:
            registers: list[int] = self._client.read_registers(function, block.start,
                                                               block.count, unit)
            return registers
        except ModbusConnectError as exc:
            raise DeviceUnavailable(str(exc), device_id) from exc
        except ModbusLinkError as exc:
            raise DeviceUnavailable(f"no answer from unit {unit} on {self.name}: {exc}",
                                    device_id) from exc
        except ModbusExceptionAnswer as exc:
            raise DeviceUnavailable(
                f"unit {unit} on {self.name} answered exception {exc.code} "
                f"({_EXCEPTION_NAMES.get(exc.code, 'unknown')}) to a read of {block.count} "
                f"{block.kind} registers from {block.start}", device_id) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


LineKey = tuple[object, ...]  # what identifies a line: ("tcp", host, port, timeout)...
_lines: dict[LineKey, _Line] = {}
_lines_lock = threading.Lock()


def _acquire_line(key: LineKey, name: str, make_client: Callable[[], Any]) -> _Line:
    with _lines_lock:
        line = _lines.get(key)
        if line is None:
            line = _lines[key] = _Line(name, make_client)
        line.users += 1
        return line


def _release_line(key: LineKey) -> None:
    with _lines_lock:
        line = _lines.get(key)
        if line is None:
            return
        line.users -= 1
        if line.users <= 0:
            del _lines[key]
            with line.lock:
                line.close()


# --- the drivers -----------------------------------------------------------------------


class _ModbusDriver:
    def __init__(self, config: _ModbusCommon, key: LineKey, name: str,
                 make_client: Callable[[], Any], *, report: FaultSink) -> None:
        self.device_id = config.device
        self.interval_s = config.interval_s
        self._unit = config.unit
        self._blocks = plan_reads(config.registers)
        # per block: (metric, address, index in the block, decoder, physical range)
        self._fields = [[(metric, reg.address, reg.address - block.start, reg.decoder(),
                          *METRICS[metric].physical) for metric, reg in block.fields]
                        for block in self._blocks]
        self._report = report
        self._key = key
        self._line = _acquire_line(key, name, make_client)

    def poll(self) -> list[Reading]:
        time_ms = int(time.time() * 1000)
        with self._line.lock:
            images = [self._line.read(block, self._unit, self.device_id)
                      for block in self._blocks]
        readings = []
        for fields, words in zip(self._fields, images, strict=True):
            for metric, address, index, decode, low, high in fields:
                raw, value = decode(words, index)
                if value is None:
                    self._report(Fault(self.device_id, metric, "invalid",
                                       f"register {address} holds {raw:#x}, "
                                       f"the device's 'no reading' value"))
                elif low <= value <= high:  # False for NaN too
                    readings.append(Reading(metric, time_ms, value))
                else:
                    checked(self.device_id, metric, value, time_ms, self._report)
        return readings

    def close(self) -> None:
        _release_line(self._key)


class ModbusTcpDriver(_ModbusDriver):
    config_model = ModbusTcpConfig

    def __init__(self, config: ModbusTcpConfig, *, report: FaultSink) -> None:
        def make_client() -> MbapClient:
            return MbapClient(config.host, config.port, config.timeout_s)

        super().__init__(config, ("tcp", config.host, config.port, config.timeout_s),
                         f"{config.host}:{config.port}", make_client, report=report)


class ModbusRtuDriver(_ModbusDriver):
    config_model = ModbusRtuConfig

    def __init__(self, config: ModbusRtuConfig, *, report: FaultSink) -> None:
        def make_client() -> Any:
            try:
                import serial  # noqa: F401  (pymodbus needs it for serial lines)
            except ImportError:
                raise DriverUnusable("Modbus RTU needs pyserial: pip install "
                                     "'pymodbus[serial]'", config.device) from None
            from pymodbus.client import ModbusSerialClient

            return _PymodbusClient(
                ModbusSerialClient(config.port, baudrate=config.baudrate,
                                   bytesize=config.bytesize, parity=config.parity,
                                   stopbits=config.stopbits, timeout=config.timeout_s,
                                   retries=0), config.port)

        super().__init__(config, ("rtu", config.port), config.port, make_client,
                         report=report)


register(ModbusTcpDriver)
register(ModbusRtuDriver)
