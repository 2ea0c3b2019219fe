"""Modbus register maps: decoding, read planning, config checks. The drivers against an
emulated device are in tests/integration/test_edge_modbus.py."""

from __future__ import annotations

import math
import sys

import pytest
from pydantic import ValidationError

from tidefield.edge.config import validate
from tidefield.edge.drivers.modbus import (
    MAX_REGISTERS_PER_READ,
    ModbusRtuConfig,
    ModbusRtuDriver,
    Register,
    plan_reads,
)
from tidefield.edge.errors import DriverUnusable

# (register config, words read, value in the metric's unit; None: the invalid sentinel)
DECODE_CASES = {
    "uint16 fixed point": ({"type": "uint16", "scale": 0.1}, [253], 25.3),
    "int16 negative": ({"type": "int16", "scale": 0.1}, [0xFFE7], -2.5),
    "int16 sentinel": ({"type": "int16", "scale": 0.1, "invalid": [0x7FFF]}, [0x7FFF], None),
    "uint16 sentinel": ({"type": "uint16", "invalid": [0xFFFF]}, [0xFFFF], None),
    "uint16 no sentinel": ({"type": "uint16"}, [0xFFFF], 65535.0),
    "µS/cm to mS/cm": ({"type": "uint16", "scale": 0.001}, [850], 0.85),
    "offset": ({"type": "uint16", "scale": 0.01, "offset": -10.0}, [1234], 2.34),
    "int32 big": ({"type": "int32"}, [0xFFFF, 0xFFFE], -2.0),
    "int32 little": ({"type": "int32", "word_order": "little"}, [0xFFFE, 0xFFFF], -2.0),
    "uint32 big": ({"type": "uint32"}, [0x0001, 0x0000], 65536.0),
    "uint32 little": ({"type": "uint32", "word_order": "little"}, [0x0001, 0x0000], 1.0),
    "uint32 sentinel": ({"type": "uint32", "invalid": [0xFFFFFFFF]}, [0xFFFF, 0xFFFF], None),
    "float32 ABCD": ({"type": "float32"}, [0x41A4, 0x0000], 20.5),
    "float32 CDAB": ({"type": "float32", "word_order": "little"}, [0x0000, 0x41A4], 20.5),
    "float32 scaled": ({"type": "float32", "scale": 2.0, "offset": 1.0}, [0x3F80, 0x0000], 3.0),
}


@pytest.mark.parametrize("case", sorted(DECODE_CASES))
def test_decode(case):
    spec, words, expected = DECODE_CASES[case]
    _, value = Register(address=0, **spec).decode(words)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected, abs=1e-9)
        assert value == expected or spec["type"] == "float32"  # fixed point comes out exact


def test_a_nan_float_decodes_as_nan_for_the_driver_to_refuse():
    _, value = Register(address=0, type="float32").decode([0x7FC0, 0x0000])
    assert math.isnan(value)


def _blocks(registers):
    return [(b.kind, b.start, b.count, [m for m, _ in b.fields])
            for b in plan_reads({m: validate(Register, r) for m, r in registers.items()})]


def test_adjacent_registers_are_read_together_and_gaps_are_not_read():
    soil = {"soil_moisture": {"address": 0}, "soil_temperature": {"address": 1, "type": "int16"},
            "soil_ec": {"address": 2}}
    assert _blocks(soil) == [("holding", 0, 3, ["soil_moisture", "soil_temperature", "soil_ec"])]
    sonde = {m: {"address": 2 * i, "type": "float32"} for i, m in enumerate(
        ["water_temperature", "salinity", "dissolved_oxygen", "water_ph"])}
    assert _blocks(sonde) == [("holding", 0, 8, list(sonde))]
    gap = {"soil_moisture": {"address": 0}, "soil_ec": {"address": 0x7D0}}
    assert [b[1:3] for b in _blocks(gap)] == [(0, 1), (0x7D0, 1)]


def test_input_and_holding_registers_are_separate_requests():
    mixed = {"soil_moisture": {"address": 0, "kind": "input"}, "soil_ec": {"address": 1}}
    assert [(b[0], b[1]) for b in _blocks(mixed)] == [("holding", 1), ("input", 0)]


def test_a_long_map_is_split_at_the_modbus_limit():
    metrics = [f"m{i}" for i in range(80)]
    registers = {m: {"address": 2 * i, "type": "float32"} for i, m in enumerate(metrics)}
    blocks = _blocks(registers)
    assert all(count <= MAX_REGISTERS_PER_READ for _, _, count, _ in blocks)
    assert [m for block in blocks for m in block[3]] == metrics


@pytest.mark.parametrize(("spec", "problem"), [
    ({"address": 0xFFFF, "type": "float32"}, "runs past 0xFFFF"),
    ({"address": 0, "type": "uint16", "invalid": [0x10000]}, "does not fit"),
    ({"address": -1}, "greater than or equal to 0"),
    ({"address": 0, "type": "int64"}, "'int16', 'uint16', 'int32', 'uint32' or 'float32'"),
    ({"address": 0, "word_order": "middle"}, "'big' or 'little'"),
])
def test_bad_register_specs_are_refused(spec, problem):
    with pytest.raises(ValidationError, match=problem):
        validate(Register, spec)


def test_rtu_without_pyserial_stops_that_driver_with_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)  # `import serial` now fails
    config = validate(ModbusRtuConfig, {
        "type": "modbus_rtu", "device": "ag-001-wx", "port": "/dev/ttyUSB9",
        "registers": {"air_temperature": {"address": 0, "type": "float32"}}})
    driver = ModbusRtuDriver(config, report=print)
    try:
        with pytest.raises(DriverUnusable, match="pyserial"):
            driver.poll()
    finally:
        driver.close()
