"""A pymodbus client reads the emulated devices over TCP and gets the model's values."""

from __future__ import annotations

import math
import struct

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import free_port
from tidefield.sim.events import InjectionPlan
from tidefield.sim.fleet import Fleet
from tidefield.sim.modbus import (
    SOIL_PROBE,
    WATER_SONDE,
    emulated_devices,
    start_modbus_server,
)

APRIL_NOON = 1_743_480_000_000  # 2025-04-01T04:00Z, noon in Qingdao
HOUR = 3_600_000


class Clock:
    """The server's "now", moved by the test."""

    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms

    def __call__(self) -> int:
        return self.t_ms


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet([s for s in load_sites() if s.id in ("ag-010", "oc-021")], seed=5)


@pytest.fixture(scope="module")
def served(fleet):
    clock = Clock(APRIL_NOON)
    units = emulated_devices(fleet)
    with start_modbus_server("127.0.0.1", free_port(), units, clock=clock) as handle:
        client = ModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
        assert client.connect()
        try:
            yield handle, client, clock
        finally:
            client.close()


def unit_of(handle, device_id: str) -> int:
    return next(u for u, d in handle.units.items() if d.device_id == device_id)


def float32(words) -> float:
    return struct.unpack(">f", struct.pack(">HH", *words))[0]


def test_soil_probe_registers_are_the_scaled_model_values(served, fleet):
    handle, client, clock = served
    unit = unit_of(handle, "ag-010-soil")
    for t_ms in (APRIL_NOON, APRIL_NOON + 7 * HOUR + 123_456):
        clock.t_ms = t_ms
        want = fleet.device_values("ag-010-soil", t_ms)
        for read in (client.read_holding_registers, client.read_input_registers):
            response = read(0, count=3, device_id=unit)
            assert not response.isError()
            moisture, temperature, ec = response.registers
            assert moisture / 10 == pytest.approx(want["soil_moisture"], abs=0.05)
            signed = temperature - 0x10000 if temperature >= 0x8000 else temperature
            assert signed / 10 == pytest.approx(want["soil_temperature"], abs=0.05)
            assert ec == round(want["soil_ec"] * 1000)  # µS/cm
        config = client.read_holding_registers(0x07D0, count=2, device_id=unit)
        assert config.registers == [unit, 2]


def test_sonde_registers_are_big_endian_floats_of_the_model_values(served, fleet):
    handle, client, clock = served
    clock.t_ms = APRIL_NOON + 3 * HOUR
    for device in ("oc-021-sonde", "oc-021-sonde2"):
        unit = unit_of(handle, device)
        response = client.read_input_registers(0, count=12, device_id=unit)
        assert not response.isError()
        want = fleet.device_values(device, clock.t_ms)
        for i, field in enumerate(WATER_SONDE.fields):
            got = float32(response.registers[2 * i:2 * i + 2])
            if field.metric in want:
                assert got == pytest.approx(want[field.metric], rel=1e-6)
            else:
                assert math.isnan(got)  # the interior sonde carries only T and DO
        status = client.read_input_registers(0x20, count=1, device_id=unit).registers[0]
        assert status == (0 if device.endswith("sonde") else 0b111010)


def test_values_follow_the_clock_and_match_backfill(served, fleet):
    handle, client, clock = served
    unit = unit_of(handle, "oc-021-sonde")
    s = fleet.table.index("oc-021", "oc-021-sonde", "dissolved_oxygen")
    times, values = fleet.series_values(s, APRIL_NOON, APRIL_NOON + 10 * 60_000)
    for t_ms, value in zip(times[::3].tolist(), values[::3].tolist(), strict=True):
        clock.t_ms = t_ms + 30_000  # between samples the sonde holds its last one
        words = client.read_holding_registers(4, count=2, device_id=unit).registers
        assert float32(words) == pytest.approx(value, rel=1e-6)


def test_forced_faults_give_garbage_and_errors(served):
    handle, client, _ = served
    unit = unit_of(handle, "ag-010-soil")
    try:
        handle.set_fault(unit, "ffff")
        assert client.read_holding_registers(0, count=3, device_id=unit).registers == \
            [0xFFFF] * 3
        handle.set_fault(unit, "exception")
        response = client.read_holding_registers(0, count=3, device_id=unit)
        assert response.isError() and response.exception_code == 0x04
    finally:
        handle.set_fault(unit, None)
    assert not client.read_holding_registers(0, count=3, device_id=unit).isError()
    with pytest.raises(ValueError, match="unknown fault mode"):
        handle.set_fault(unit, "melted")


def test_a_timeout_fault_leaves_the_client_waiting(fleet):
    units = emulated_devices(fleet, ["ag-010"], templates=["soil"])
    with start_modbus_server("127.0.0.1", free_port(), units,
                             clock=Clock(APRIL_NOON)) as handle:
        handle.set_fault(1, "timeout")
        client = ModbusTcpClient("127.0.0.1", port=handle.port, timeout=0.5, retries=0)
        assert client.connect()
        try:
            with pytest.raises(ModbusIOException, match="No response"):
                client.read_holding_registers(0, count=3, device_id=1)
        finally:
            client.close()


def test_injected_faults_reach_the_wire():
    plan = InjectionPlan(faults_per_series=30.0, events_per_site=0.0,
                         fault_kinds=("out_of_range", "dropout"))
    fleet = Fleet([s for s in load_sites() if s.id == "ag-010"], seed=9, plan=plan)
    labels = [lb for lb in fleet.labels(APRIL_NOON - 15 * 86_400_000, APRIL_NOON + 15 * 86_400_000)
              if lb.device_id == "ag-010-soil"]
    garbage = next(lb for lb in labels if lb.kind == "out_of_range")
    clock = Clock(garbage.start_ms)
    units = emulated_devices(fleet, ["ag-010"], templates=["soil"])
    with start_modbus_server("127.0.0.1", free_port(), units, clock=clock) as handle:
        client = ModbusTcpClient("127.0.0.1", port=handle.port, timeout=2, retries=0)
        assert client.connect()
        try:
            image = client.read_holding_registers(0, count=3, device_id=1).registers
        finally:
            client.close()
    field = next(f for f in SOIL_PROBE.fields if f.metric == garbage.metric)
    assert image[field.address] == 0xFFFF  # what a failing probe says


def test_a_device_in_dropout_answers_gateway_no_response():
    class Silent:
        def device_values(self, device_id, t_ms):
            return {"soil_moisture": None, "soil_temperature": None, "soil_ec": None}

    class Partly(Silent):
        def device_values(self, device_id, t_ms):
            return {**super().device_values(device_id, t_ms), "soil_ec": 0.85}

    from pymodbus.constants import ExcCodes

    from tidefield.sim.modbus import EmulatedDevice

    assert EmulatedDevice(1, "x-soil", SOIL_PROBE, Silent()).image(0) == \
        ExcCodes.GATEWAY_NO_RESPONSE
    image = EmulatedDevice(1, "x-soil", SOIL_PROBE, Partly()).image(0)
    assert image[:3] == [0xFFFF, 0xFFFF, 850]
