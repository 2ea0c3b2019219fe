"""The DS18B20 driver against a fake sysfs tree: the real interface is files."""

from __future__ import annotations

import time

import pytest

from tidefield.edge.config import validate
from tidefield.edge.drivers.onewire import Ds18b20Config, Ds18b20Driver
from tidefield.edge.errors import DeviceUnavailable

SOIL_PROBE = "28-0316a2793bff"
WATER_PROBE = "28-00000a1b2c3d"


def w1_slave(millidegrees: int, crc_ok: bool = True) -> str:
    return (f"72 01 4b 46 7f ff 0e 10 57 : crc=57 {'YES' if crc_ok else 'NO'}\n"
            f"72 01 4b 46 7f ff 0e 10 57 t={millidegrees}\n")


@pytest.fixture
def sysfs(tmp_path):
    """write(sensor, text) puts a sensor's w1_slave under a fake /sys/bus/w1/devices."""
    def write(sensor: str, text: str) -> None:
        folder = tmp_path / sensor
        folder.mkdir(exist_ok=True)
        (folder / "w1_slave").write_text(text)

    (tmp_path / "w1_bus_master1").mkdir()  # the kernel lists the master here too
    write.base = tmp_path
    return write


def driver(sysfs, sensors, device="ag-001-soil"):
    faults = []
    config = Ds18b20Config(type="ds18b20", device=device, base_path=sysfs.base,
                           sensors=sensors)
    return Ds18b20Driver(config, report=faults.append), faults


def test_reads_millidegrees_with_the_time_of_reading(sysfs):
    sysfs(SOIL_PROBE, w1_slave(23125))
    probe, faults = driver(sysfs, {"soil_temperature": SOIL_PROBE})
    before = int(time.time() * 1000)
    [reading] = probe.poll()
    assert (reading.metric, reading.value) == ("soil_temperature", 23.125)
    assert before <= reading.time_ms <= int(time.time() * 1000)
    assert faults == []


def test_below_zero(sysfs):
    sysfs(SOIL_PROBE, w1_slave(-1250))
    probe, _ = driver(sysfs, {"soil_temperature": SOIL_PROBE})
    assert probe.poll()[0].value == -1.25


@pytest.mark.parametrize(("text", "reason"), [
    (w1_slave(23125, crc_ok=False), "crc"),
    (w1_slave(85000), "invalid"),  # the power-on value, not a temperature
    (w1_slave(75000), "out_of_range"),  # soil temperature tops out at 60 °C in the catalog
    ("72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57\n", "invalid"),
    ("", "crc"),
])
def test_bad_answers_are_faults_not_readings(sysfs, text, reason):
    sysfs(SOIL_PROBE, text)
    probe, faults = driver(sysfs, {"soil_temperature": SOIL_PROBE})
    assert probe.poll() == []
    assert [(f.device_id, f.metric, f.reason) for f in faults] == [
        ("ag-001-soil", "soil_temperature", reason)]


def test_one_missing_sensor_is_a_fault_and_the_other_is_read(sysfs):
    sysfs(WATER_PROBE, w1_slave(18500))
    probe, faults = driver(sysfs, {"water_temperature": WATER_PROBE,
                                   "dissolved_oxygen": SOIL_PROBE}, device="oc-001-sonde")
    assert [(r.metric, r.value) for r in probe.poll()] == [("water_temperature", 18.5)]
    assert [(f.metric, f.reason) for f in faults] == [("dissolved_oxygen", "missing")]


def test_no_sensor_at_all_is_an_unavailable_device(sysfs):
    probe, _ = driver(sysfs, {"soil_temperature": SOIL_PROBE})
    with pytest.raises(DeviceUnavailable, match="w1-gpio"):
        probe.poll()


def test_auto_takes_the_only_sensor_present(sysfs):
    sysfs(SOIL_PROBE, w1_slave(9000))
    probe, _ = driver(sysfs, {"soil_temperature": "auto"})
    assert probe.poll()[0].value == 9.0
    sysfs(WATER_PROBE, w1_slave(9000))  # two sensors: which one is ambiguous
    with pytest.raises(DeviceUnavailable):
        probe.poll()


def test_sensor_ids_are_checked_in_the_config(sysfs):
    with pytest.raises(ValueError, match=r"sensors\.soil_temperature"):
        validate(Ds18b20Config, {"type": "ds18b20", "device": "ag-001-soil",
                                 "sensors": {"soil_temperature": "28-x"}})
    with pytest.raises(ValueError, match="only one sensor can be 'auto'"):
        validate(Ds18b20Config, {"type": "ds18b20", "device": "ag-001-soil",
                                 "sensors": {"soil_temperature": "auto", "soil_moisture": "auto"}})
