"""firmware-sim's relay board: Modbus writes (05, 06, 15, 16) switch relays whose effect
the emulated sensors read (an aerator raises dissolved oxygen, a valve wets the soil)."""

from __future__ import annotations

import time

import pytest

from tidefield.edge.drivers.mbap import READ_HOLDING_REGISTERS, MbapClient
from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import free_port
from tidefield.sim.actuators import ActuatorBoard, Effect
from tidefield.sim.fleet import Fleet
from tidefield.sim.modbus import emulated_devices, start_modbus_server

BOARD_UNIT = 200


@pytest.fixture(scope="module")
def emulator():
    sites = [s for s in load_sites() if s.id in ("oc-001", "ag-001")]
    fleet = Fleet(sites, seed=5)
    units = emulated_devices(fleet)
    # 60x: an aerator's 15-minute time constant passes in 15 s; oxygen injection, so that
    # DO rises whatever the season (plain aeration adds nothing to saturated water)
    board = ActuatorBoard(BOARD_UNIT, {0: Effect("aerator", "oc-001-sonde", efficiency=1.5),
                                       1: Effect("valve", "ag-001-soil")}, time_scale=60.0)
    handle = start_modbus_server("127.0.0.1", free_port(), units, boards=[board])
    unit_of = {u.device_id: n for n, u in units.items()}
    yield handle, board, unit_of
    handle.stop()


def test_writes_switch_relays_and_reads_tell_their_state(emulator):
    handle, board, _ = emulator
    client = MbapClient("127.0.0.1", handle.port, 2.0)
    try:
        client.write_coil(3, True, BOARD_UNIT)
        client.write_coils(5, [True, False, True], BOARD_UNIT)
        assert client.read_coils(0, 8, BOARD_UNIT) == [False, False, False, True, False,
                                                       True, False, True]
        client.write_register(3, 0, BOARD_UNIT)
        client.write_registers(5, [0, 0, 0], BOARD_UNIT)
        assert board.states() == [False] * 8
        assert client.read_registers(READ_HOLDING_REGISTERS, 0, 8, BOARD_UNIT) == [0] * 8
    finally:
        client.close()


@pytest.mark.parametrize(("relay", "device", "metric"), [
    (0, "oc-001-sonde", "dissolved_oxygen"), (1, "ag-001-soil", "soil_moisture")])
def test_an_actuator_moves_its_metric_and_it_relaxes_after(emulator, relay, device, metric):
    handle, board, unit_of = emulator
    sensor = handle.units[unit_of[device]]
    now = int(time.time() * 1000)
    base = sensor.fleet.device_values(device, now)[metric]
    board.switch(relay, True, now)
    try:
        # 10 min of (scaled) running: most of the way to the target
        after = sensor.values(now + 10_000)[metric]
        assert after > base + 1.0, (base, after)
    finally:
        board.switch(relay, False, now + 10_000)
    relaxed = sensor.values(now + 10_000 + 600_000)[metric]
    base_then = sensor.fleet.device_values(device, now + 610_000)[metric]
    assert relaxed == pytest.approx(base_then, abs=0.05)
