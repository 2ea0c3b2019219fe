"""The Modbus TCP driver against firmware-sim's emulated devices (real TCP, real pymodbus
server). Also home of the emulator and register maps the other edge tests use."""

from __future__ import annotations

import atexit
import functools
import math
import threading
import time
from dataclasses import dataclass

import pytest

from tidefield.edge.config import validate
from tidefield.edge.drivers import modbus
from tidefield.edge.drivers.modbus import ModbusTcpConfig, ModbusTcpDriver
from tidefield.edge.errors import DeviceUnavailable
from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import free_port

SEED = 11
SITES = ("ag-001", "oc-001")

# The maps as an installer writes them from the devices' datasheets (firmware-sim's
# modbus.py documents what it emulates), converting to the catalog's units.
SOIL_REGISTERS = {
    "soil_moisture": {"address": 0, "type": "uint16", "scale": 0.1, "invalid": [0xFFFF]},
    "soil_temperature": {"address": 1, "type": "int16", "scale": 0.1, "invalid": [0xFFFF]},
    "soil_ec": {"address": 2, "type": "uint16", "scale": 0.001, "invalid": [0xFFFF]},  # µS/cm
}
SONDE_METRICS = ("water_temperature", "salinity", "dissolved_oxygen", "water_ph", "turbidity",
                 "chlorophyll_a")


def float_registers(metrics) -> dict:
    """float32 ABCD pairs from address 0 in template order (the sonde, and every other
    emulated device)."""
    return {metric: {"address": 2 * i, "type": "float32"} for i, metric in enumerate(metrics)}


@dataclass
class Sim:
    handle: object  # tidefield.sim.modbus.ModbusServerHandle
    fleet: object  # tidefield.sim.fleet.Fleet
    unit_of: dict[str, int]  # device id -> unit id
    site_of: dict[str, str]
    metrics_of: dict[str, tuple[str, ...]]

    @property
    def port(self) -> int:
        return self.handle.port

    def registers(self, device: str) -> dict:
        if device.endswith("-soil"):
            return SOIL_REGISTERS
        return float_registers(self.metrics_of[device])

    def driver(self, device: str, **overrides) -> dict:
        """A driver config (dict) reading ``device`` from the emulator."""
        return {"type": "modbus_tcp", "device": device, "host": "127.0.0.1", "port": self.port,
                "unit": self.unit_of[device], "interval_s": 0.25, "timeout_s": 2.0,
                "registers": self.registers(device), **overrides}

    def expected(self, device: str, metric: str, time_ms: int) -> set[float]:
        """What the device's registers say at ``time_ms``, decoded as the emulator's own
        map decodes them (a sample boundary may fall between the agent's timestamp and
        the emulator's clock: the next second's value is accepted too)."""
        unit = self.unit_of[device]
        register_map = self.handle.units[unit].register_map
        found = set()
        for t in (time_ms, time_ms + 2000):
            value = self.fleet.value_at(self.site_of[device], device, metric, t)
            if value is not None:
                found.add(register_map.decode(register_map.encode({metric: value}, unit))[metric])
        return found

    def fault(self, device: str, mode: str | None) -> None:
        self.handle.set_fault(self.unit_of[device], mode)


@functools.cache
def sim() -> Sim:
    """firmware-sim's Modbus TCP emulator of two sites' devices, one per test process."""
    from tidefield.sim.fleet import Fleet
    from tidefield.sim.modbus import emulated_devices, start_modbus_server

    sites = [site for site in load_sites() if site.id in SITES]
    fleet = Fleet(sites, seed=SEED)
    units = emulated_devices(fleet)
    handle = start_modbus_server("127.0.0.1", free_port(), units)
    atexit.register(handle.stop)
    devices = {d.id: d for s in sites for d in s.devices}
    return Sim(handle, fleet, {u.device_id: n for n, u in units.items()},
               {d: devices[d].site_id for d in devices},
               {d: devices[d].template.metrics for d in devices})


@pytest.fixture
def sim_modbus() -> Sim:
    return sim()


def matches(sim: Sim, device: str, reading) -> bool:
    return any(math.isclose(reading.value, e, rel_tol=1e-9, abs_tol=1e-9)
               for e in sim.expected(device, reading.metric, reading.time_ms))


def make_driver(sim: Sim, device: str, faults: list, **overrides) -> ModbusTcpDriver:
    config = validate(ModbusTcpConfig, sim.driver(device, **overrides))
    return ModbusTcpDriver(config, report=faults.append)


@pytest.mark.parametrize("device", ["ag-001-soil", "oc-001-sonde", "ag-001-wx"])
def test_values_in_catalog_units_stamped_with_the_read_time(sim_modbus, device):
    faults: list = []
    driver = make_driver(sim_modbus, device, faults)
    try:
        before = int(time.time() * 1000)
        readings = driver.poll()
        after = int(time.time() * 1000)
    finally:
        driver.close()
    assert faults == []
    assert [r.metric for r in readings] == list(sim_modbus.metrics_of[device])
    for reading in readings:
        assert before <= reading.time_ms <= after
        assert matches(sim_modbus, device, reading), (reading, sim_modbus.expected(
            device, reading.metric, reading.time_ms))


def test_input_registers_too(sim_modbus):
    registers = {m: {**spec, "kind": "input"} for m, spec in SOIL_REGISTERS.items()}
    driver = make_driver(sim_modbus, "ag-001-soil", [], registers=registers)
    try:
        assert all(matches(sim_modbus, "ag-001-soil", r) for r in driver.poll())
    finally:
        driver.close()


@pytest.mark.parametrize(("device", "reasons"), [
    ("ag-001-soil", {"invalid"}),  # 0xFFFF: the probe's "no reading"
    ("oc-001-sonde", {"non_finite"}),  # 0xFFFF 0xFFFF is a NaN
])
def test_garbage_registers_are_faults_not_readings(sim_modbus, device, reasons):
    faults: list = []
    driver = make_driver(sim_modbus, device, faults)
    sim_modbus.fault(device, "ffff")
    try:
        assert driver.poll() == []
    finally:
        sim_modbus.fault(device, None)
        driver.close()
    assert {f.metric for f in faults} == set(sim_modbus.metrics_of[device])
    assert {f.reason for f in faults} == reasons
    assert all(f.device_id == device for f in faults)


def test_a_value_outside_the_physical_range_is_a_fault(sim_modbus):
    faults: list = []
    # a wrong scale in the config makes soil moisture 10x too large: 100+ %
    registers = {**SOIL_REGISTERS, "soil_moisture": {"address": 0, "scale": 10.0}}
    driver = make_driver(sim_modbus, "ag-001-soil", faults, registers=registers)
    try:
        metrics = [r.metric for r in driver.poll()]
    finally:
        driver.close()
    assert metrics == ["soil_temperature", "soil_ec"]
    assert [(f.metric, f.reason) for f in faults] == [("soil_moisture", "out_of_range")]


def test_an_exception_answer_is_an_unavailable_device(sim_modbus):
    driver = make_driver(sim_modbus, "ag-001-leaf", [])
    sim_modbus.fault("ag-001-leaf", "exception")
    try:
        with pytest.raises(DeviceUnavailable, match=r"exception 4 \(device failure\)"):
            driver.poll()
    finally:
        sim_modbus.fault("ag-001-leaf", None)
    try:
        assert len(driver.poll()) == 1  # and it reads again once the device recovers
    finally:
        driver.close()


def test_a_silent_device_times_out_and_the_next_poll_starts_clean(sim_modbus):
    driver = make_driver(sim_modbus, "ag-001-leaf", [], timeout_s=0.3)
    sim_modbus.fault("ag-001-leaf", "timeout")
    started = time.monotonic()
    try:
        with pytest.raises(DeviceUnavailable, match="no answer from unit"):
            driver.poll()
    finally:
        sim_modbus.fault("ag-001-leaf", None)
    assert time.monotonic() - started < 3
    try:
        assert len(driver.poll()) == 1
    finally:
        driver.close()


def test_an_unreachable_device(sim_modbus):
    driver = make_driver(sim_modbus, "ag-001-leaf", [], port=free_port())
    try:
        with pytest.raises(DeviceUnavailable, match=r"cannot connect to 127\.0\.0\.1"):
            driver.poll()
    finally:
        driver.close()


def test_devices_on_one_endpoint_share_a_connection_one_request_at_a_time(sim_modbus):
    devices = ["ag-001-soil", "ag-001-wx", "ag-001-leaf", "ag-001-gw"]
    drivers = [make_driver(sim_modbus, d, []) for d in devices]
    results: dict[str, list] = {d: [] for d in devices}

    def poll(driver) -> None:
        for _ in range(20):
            results[driver.device_id].append(driver.poll())

    try:
        assert len({id(d._line) for d in drivers}) == 1
        threads = [threading.Thread(target=poll, args=(d,)) for d in drivers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for device in devices:
            assert len(results[device]) == 20
            for readings in results[device]:
                assert [r.metric for r in readings] == list(sim_modbus.metrics_of[device])
                assert all(matches(sim_modbus, device, r) for r in readings)
    finally:
        for driver in drivers:
            driver.close()
    assert not modbus._lines  # the last driver closed the connection
