"""Modbus TCP emulation of the fleet's field devices, for testing the edge agent.

One server per port (pymodbus 3.x, its ``SimDevice`` datastore) answers for several unit
ids, one emulated device each. Every read computes the registers from the simulator's
value *now* (``Fleet.device_values(device, clock())``: the sensor's latest sample, held
between samples), so what the edge agent reads equals what backfill generates for that
sample, quantised by the register encoding.

Register maps (function codes 03 and 04 read the same registers; writes are refused)
--------------------------------------------------------------------------------------

**RS-485 soil moisture / temperature / EC probe** (template ``soil``; the common map of
the 3-in-1 probes sold in China, e.g. JXBS-3001-TR / RS-ECTH-N01):

=========  ==================  ===============================================
register   quantity            encoding
=========  ==================  ===============================================
0x0000     soil moisture       uint16, % x 10          (253 = 25.3 %)
0x0001     soil temperature    int16 two's complement, °C x 10 (0xFFE7 = -2.5)
0x0002     soil EC             uint16, µS/cm            (850 = 0.85 mS/cm)
0x07D0     device address      uint16 (= the unit id)
0x07D1     baud rate code      uint16, 0: 2400, 1: 4800, 2: 9600 (always 2)
=========  ==================  ===============================================

A value the probe cannot encode (out of range, or no reading) reads 0xFFFF, in the
signed temperature register too (where it decodes to a plausible -0.1 °C: declare 0xFFFF
invalid in the edge agent's map).

**Multi-parameter water-quality sonde** (templates ``sonde``, ``sonde2``; YSI/Aquaread
style): IEEE-754 float32, big-endian byte and word order (ABCD), two registers each:

=========  =====================  =========
register   quantity               unit
=========  =====================  =========
0x0000     water temperature      °C
0x0002     salinity               PSU
0x0004     dissolved oxygen       mg/L
0x0006     pH                     pH
0x0008     turbidity              NTU
0x000A     chlorophyll-a          µg/L
0x0020     status                 uint16: bit i set while parameter i has no reading
=========  =====================  =========

A parameter the sonde does not carry, or has no reading for, reads NaN (0x7FC0 0x0000).

**Any other device** (weather station, tide gauge, gateway...): float32 ABCD pairs from
0x0000 in the order of its template's metrics (``DEVICE_TEMPLATES``), NaN when missing.

Actuators
---------
A relay board (``actuators.ActuatorBoard``, its own unit id; coils 0..7 and holding
registers 0..7, both writable) switches aerators and valves whose effect the emulated
sensors then read: a device's values pass through the board's ``overlay``.

Faults
------
Planned faults and events of the fleet's injection plan show up as they would on the
wire: garbage values, stuck or drifting registers; a device whose every metric is in a
dropout answers Modbus exception 0x0B (gateway target failed to respond). On top,
``ModbusServerHandle.set_fault(unit, mode)`` forces one of ``FAULT_MODES`` on a unit:
``ffff`` (every register 0xFFFF), ``zero`` (every register 0), ``exception`` (exception
0x04, device failure), ``timeout`` (no answer at all).
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from .actuators import RELAYS, ActuatorBoard
from .fleet import Fleet

log = logging.getLogger(__name__)

Clock = Callable[[], int]  # ms since the epoch, UTC
Values = Mapping[str, float | None]

FAULT_MODES = ("ffff", "zero", "exception", "timeout")
_TIMEOUT_S = 3600.0  # "timeout" holds the request this long; clients give up much sooner
NAN_WORDS = (0x7FC0, 0x0000)


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


# --- register maps ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScaledInt:
    """One register holding round(value x scale) as uint16 or two's-complement int16."""

    address: int
    metric: str
    scale: float
    signed: bool

    def encode(self, value: float | None) -> list[int]:
        # What these probes read back when they cannot measure: 0xFFFF, in the signed
        # register too, where it would read as a plausible -0.1: a register map has to
        # declare 0xFFFF invalid rather than range-check the decoded value.
        if value is None or not math.isfinite(value):
            return [0xFFFF]
        raw = round(value * self.scale)
        low, high = (-0x8000, 0x7FFF) if self.signed else (0, 0xFFFF)
        if not low <= raw <= high:
            return [0xFFFF]
        return [raw & 0xFFFF]

    def decode(self, registers: Sequence[int]) -> float:
        raw = registers[0]
        if self.signed and raw >= 0x8000:
            raw -= 0x10000
        return raw / self.scale


@dataclass(frozen=True, slots=True)
class Float32:
    """Two registers holding an IEEE-754 float32, big-endian byte and word order."""

    address: int
    metric: str

    def encode(self, value: float | None) -> list[int]:
        if value is None or not math.isfinite(value):
            return list(NAN_WORDS)
        return list(struct.unpack(">HH", struct.pack(">f", value)))

    def decode(self, registers: Sequence[int]) -> float:
        return struct.unpack(">f", struct.pack(">HH", registers[0], registers[1]))[0]


Field = ScaledInt | Float32


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where each metric of a device lives, and the device's extra registers."""

    name: str
    fields: tuple[Field, ...]
    status_address: int | None = None  # bit i: field i has no reading
    constants: tuple[tuple[int, str], ...] = ()  # (address, "unit_id" | "baud_code")

    @property
    def size(self) -> int:
        ends = [f.address + (2 if isinstance(f, Float32) else 1) for f in self.fields]
        ends += [a + 1 for a, _ in self.constants]
        if self.status_address is not None:
            ends.append(self.status_address + 1)
        return max(ends)

    def encode(self, values: Values, unit_id: int) -> list[int]:
        """The register image (from address 0) for ``values`` (None: no reading)."""
        image = [0] * self.size
        status = 0
        for i, f in enumerate(self.fields):
            value = values.get(f.metric)
            words = f.encode(value)
            image[f.address:f.address + len(words)] = words
            if value is None:
                status |= 1 << i
        if self.status_address is not None:
            image[self.status_address] = status
        for address, what in self.constants:
            image[address] = unit_id if what == "unit_id" else _BAUD_9600
        return image

    def decode(self, image: Sequence[int]) -> dict[str, float]:
        """Values from a register image (the edge agent's side; NaN stays NaN)."""
        out = {}
        for f in self.fields:
            width = 2 if isinstance(f, Float32) else 1
            out[f.metric] = f.decode(image[f.address:f.address + width])
        return out

    def addresses(self) -> list[int]:
        """Readable addresses: the data block from 0, then the constants."""
        return sorted({*range(self._data_end()), *(a for a, _ in self.constants)})

    def _data_end(self) -> int:
        ends = [f.address + (2 if isinstance(f, Float32) else 1) for f in self.fields]
        if self.status_address is not None:
            ends.append(self.status_address + 1)
        return max(ends)


_BAUD_9600 = 2

SOIL_PROBE = RegisterMap("rs485-soil-probe", (
    ScaledInt(0x0000, "soil_moisture", 10.0, signed=False),
    ScaledInt(0x0001, "soil_temperature", 10.0, signed=True),
    ScaledInt(0x0002, "soil_ec", 1000.0, signed=False),  # mS/cm -> µS/cm
), constants=((0x07D0, "unit_id"), (0x07D1, "baud_code")))

WATER_SONDE = RegisterMap("water-quality-sonde", (
    Float32(0x0000, "water_temperature"),
    Float32(0x0002, "salinity"),
    Float32(0x0004, "dissolved_oxygen"),
    Float32(0x0006, "water_ph"),
    Float32(0x0008, "turbidity"),
    Float32(0x000A, "chlorophyll_a"),
), status_address=0x0020)

REGISTER_MAPS: Mapping[str, RegisterMap] = {
    "soil": SOIL_PROBE, "sonde": WATER_SONDE, "sonde2": WATER_SONDE,
}


def generic_map(template_name: str, metrics: Sequence[str]) -> RegisterMap:
    return RegisterMap(f"generic-{template_name}",
                       tuple(Float32(2 * i, m) for i, m in enumerate(metrics)))


def register_map_for(template_name: str, metrics: Sequence[str]) -> RegisterMap:
    """The map a device of this template speaks (the generic float map by default)."""
    return REGISTER_MAPS.get(template_name) or generic_map(template_name, metrics)


# --- emulated devices ------------------------------------------------------------------------


@dataclass
class EmulatedDevice:
    """One unit id: a fleet device behind a register map."""

    unit_id: int
    device_id: str
    register_map: RegisterMap
    fleet: Fleet
    fault: str | None = None  # a FAULT_MODES entry forced by the test harness
    boards: list[ActuatorBoard] = field(default_factory=list)  # relays that act on it

    def values(self, t_ms: int) -> dict[str, float | None]:
        values = self.fleet.device_values(self.device_id, t_ms)
        for board in self.boards:
            values = board.overlay(self.device_id, values, t_ms)
        return values

    def image(self, t_ms: int) -> list[int] | ExcCodes:
        """The register image at ``t_ms``, or the exception the device answers with."""
        if self.fault == "ffff":
            return [0xFFFF] * self.register_map.size
        if self.fault == "zero":
            return [0] * self.register_map.size
        if self.fault == "exception":
            return ExcCodes.DEVICE_FAILURE
        values = self.values(t_ms)
        if values and all(v is None for v in values.values()):
            return ExcCodes.GATEWAY_NO_RESPONSE  # the probe is silent: a dropout
        return self.register_map.encode(values, self.unit_id)


def emulated_devices(fleet: Fleet, site_ids: Sequence[str] | None = None,
                     templates: Sequence[str] | None = None) -> dict[int, EmulatedDevice]:
    """Unit ids 1, 2, ... for the devices of ``site_ids`` (default: every site of the
    fleet), in table order, optionally only of some templates."""
    wanted = None if site_ids is None else set(site_ids)
    units: dict[int, EmulatedDevice] = {}
    for device in fleet.table.devices:
        if wanted is not None and device.site_id not in wanted:
            continue
        if templates is not None and device.template.name not in templates:
            continue
        unit = len(units) + 1
        if unit > 247:
            raise ValueError("a Modbus line has at most 247 unit ids; serve fewer devices "
                             "per port")
        units[unit] = EmulatedDevice(unit, device.id, register_map_for(
            device.template.name, device.template.metrics), fleet)
    if wanted is not None:
        missing = wanted - {fleet.table.device_by_id[d.device_id].site_id
                            for d in units.values()}
        if missing:
            raise KeyError(f"no devices for sites {', '.join(sorted(missing))}")
    return units


# --- the server ----------------------------------------------------------------------------


@dataclass
class ModbusServerHandle:
    """A running server; ``stop()`` (or leaving the ``with`` block) shuts it down."""

    host: str
    port: int
    units: dict[int, EmulatedDevice]
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _server: ModbusTcpServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def set_fault(self, unit_id: int, mode: str | None) -> None:
        """Force a fault mode on one unit (None clears it)."""
        if mode is not None and mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of "
                             f"{', '.join(FAULT_MODES)}")
        self.units[unit_id].fault = mode

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(_shut_down(self._server), self._loop)
        try:
            future.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> ModbusServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _shut_down(server: ModbusTcpServer) -> None:
    await server.shutdown()
    # requests still held (a "timeout" fault sleeps) are cancelled, not left dangling
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def _sim_device(unit: EmulatedDevice, clock: Clock) -> SimDevice:
    image_size = unit.register_map.size

    async def on_access(function_code: int, start_address: int, address: int, count: int,
                        registers: list[int], set_values: list[int] | list[bool] | None
                        ) -> ExcCodes | None:
        if set_values is not None:
            return ExcCodes.ILLEGAL_ADDRESS  # read-only emulation
        if unit.fault == "timeout":
            await asyncio.sleep(_TIMEOUT_S)
            return ExcCodes.GATEWAY_NO_RESPONSE
        image = unit.image(clock())
        if isinstance(image, ExcCodes):
            return image
        registers[:image_size] = image  # the block starts at address 0
        return None

    data = [SimData(a, values=0, datatype=DataType.REGISTERS, readonly=True)
            for a in unit.register_map.addresses()]
    return SimDevice(unit.unit_id, simdata=data, action=on_access)


def _board_device(board: ActuatorBoard, clock: Clock) -> SimDevice:
    """The relay board: writes to coils (05, 15) and holding registers (06, 16) switch
    relays; reads answer what pymodbus stored, which the writes keep in step."""

    async def on_access(function_code: int, start_address: int, address: int, count: int,
                        registers: list[int], set_values: list[int] | list[bool] | None
                        ) -> ExcCodes | None:
        if set_values is None:
            if function_code in (3, 4):  # registers mirror the relays
                states = board.states()
                registers[:RELAYS] = [int(on) for on in states]
            return None
        if address + len(set_values) > RELAYS:
            return ExcCodes.ILLEGAL_ADDRESS
        now = clock()
        for i, value in enumerate(set_values):
            board.switch(address + i, bool(value), now)
        return None

    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    words = [SimData(0, count=RELAYS, values=0, datatype=DataType.REGISTERS)]
    return SimDevice(board.unit_id, simdata=(bits, bits, words, words), action=on_access)


def start_modbus_server(host: str, port: int,
                        devices: Mapping[int, EmulatedDevice] | Sequence[EmulatedDevice], *,
                        clock: Clock | None = None, boards: Sequence[ActuatorBoard] = (),
                        ready_timeout: float = 30.0) -> ModbusServerHandle:
    """Serve ``devices`` (by unit id) on ``host:port`` from a background thread.

    ``clock`` gives "now" in ms (default: the wall clock); tests pass their own. Every
    device is evaluated once before the port opens, so compilation and injection
    planning do not eat into the first client's timeout.
    """
    units = dict(devices) if isinstance(devices, Mapping) else {d.unit_id: d for d in devices}
    taken = set(units) & {b.unit_id for b in boards}
    if taken:
        raise ValueError(f"unit ids {sorted(taken)} are both a sensor and a relay board")
    by_id = {u.device_id: u for u in units.values()}
    for board in boards:
        for effect in board.effects.values():
            if effect.device_id not in by_id:
                raise ValueError(f"relay board {board.unit_id}: {effect.device_id} is not "
                                 f"served here")
            if board not in by_id[effect.device_id].boards:
                by_id[effect.device_id].boards.append(board)
    if not units:
        raise ValueError("no devices to serve")
    clock = clock or wall_clock_ms
    now = clock()
    for unit in units.values():
        unit.image(now)  # warm up: JIT and the injection plan of this epoch

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        server = ModbusTcpServer([*(_sim_device(u, clock) for u in units.values()),
                                  *(_board_device(b, clock) for b in boards)],
                                 address=(host, port))
        holder["server"] = server
        await server.serve_forever(background=True)

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except Exception as exc:  # reported to the starting thread below
            holder["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name=f"modbus-{port}", daemon=True)
    thread.start()
    if not ready.wait(ready_timeout):
        raise TimeoutError(f"Modbus server on {host}:{port} did not start")
    error = holder.get("error")
    if isinstance(error, BaseException):
        raise OSError(f"cannot serve Modbus on {host}:{port}: {error}") from error
    log.info("modbus server listening", extra={"host": host, "port": port,
                                               "units": len(units)})
    return ModbusServerHandle(host, port, units, loop, holder["server"], thread)


def describe(units: Mapping[int, EmulatedDevice]) -> list[str]:
    """One line per unit: id, device, register map, metrics."""
    return [f"unit {u.unit_id:3d}  {u.device_id:22s} {u.register_map.name:22s} "
            + ", ".join(f.metric for f in u.register_map.fields) for u in units.values()]


__all__ = [
    "FAULT_MODES", "REGISTER_MAPS", "SOIL_PROBE", "WATER_SONDE", "ActuatorBoard", "EmulatedDevice",
    "Float32", "ModbusServerHandle", "RegisterMap", "ScaledInt", "describe",
    "emulated_devices", "generic_map", "register_map_for", "start_modbus_server",
]
