"""The agent's config: the sample loads, and every problem names its field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidefield.edge.config import load_config, parse_config
from tidefield.edge.drivers import DRIVERS
from tidefield.edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "edge.yaml"

SOIL_PROBE = {"type": "modbus_tcp", "device": "ag-001-soil", "host": "10.0.0.5",
              "registers": {"soil_moisture": {"address": 0, "scale": 0.1}}}


def problems(data) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "edge.yaml")
    return list(caught.value.problems)


def test_the_sample_config_is_valid_and_documents_every_driver_type():
    config = load_config(SAMPLE)
    assert config.site == "ag-001" and config.gateway_device == "ag-001-gw"
    assert [d.type for d in config.drivers] == ["modbus_tcp", "modbus_rtu"]
    soil = config.drivers[0].registers
    assert soil["soil_ec"].scale == 0.001 and soil["soil_ec"].invalid == (0xFFFF,)
    text = SAMPLE.read_text()
    for type_name in DRIVERS:
        assert f"type: {type_name}" in text


def test_defaults():
    config = parse_config({"site": "oc-001"})
    assert config.queue.when_full == "drop_oldest"
    assert config.broker.content_type == "json"
    assert config.client_id == "tidefield-edge-oc-001"
    assert config.device_intervals() == {"oc-001-gw": 60.0}


def test_the_example_of_the_brief():
    bad = {**SOIL_PROBE, "port": "five-oh-two"}
    assert problems({"site": "ag-001", "drivers": [SOIL_PROBE, bad]})[0] == (
        "drivers.1.port", "Input should be a valid integer, unable to parse string as an integer")


@pytest.mark.parametrize(("data", "path", "message"), [
    ({"site": "ag-001", "queue": {"max_reading": 5}}, "queue.max_reading", "Extra inputs"),
    ({"site": "ag-001", "queue": {"when_full": "panic"}}, "queue.when_full",
     "'drop_oldest' or 'refuse_newest'"),
    ({"site": "ag-001", "broker": {"url": "http://x"}}, "broker.url", "mqtt://host:port"),
    ({"site": "AG 1"}, "site", "should match pattern"),
    ({"site": "zz-999"}, "site", "not in the site registry"),
    ({"site": "ag-001", "drivers": [{"type": "bacnet", "device": "ag-001-wx"}]},
     "drivers.0.type", "unknown driver type 'bacnet'"),
    ({"site": "ag-001", "drivers": [{"device": "ag-001-wx"}]}, "drivers.0.type",
     "Field required"),
    ({"site": "ag-001", "drivers": [{**SOIL_PROBE, "registers": {}}]}, "drivers.0.registers",
     "at least 1 item"),
    ({"site": "ag-001", "drivers": [{**SOIL_PROBE, "registers": {
        "soil_moisture": {"address": 0, "type": "float"}}}]},
     "drivers.0.registers.soil_moisture.type", "'float32'"),
    ({"site": "ag-001", "drivers": [{**SOIL_PROBE, "device": "oc-001-sonde"}]},
     "drivers.0.device", "not a device of site ag-001"),
    ({"site": "ag-001", "drivers": [{**SOIL_PROBE, "registers": {"soil_wetness": {
        "address": 0}}}]}, "drivers.0.registers.soil_wetness", "unknown metric 'soil_wetness'"),
    ({"site": "ag-001", "drivers": [{**SOIL_PROBE, "registers": {"air_temperature": {
        "address": 0}}}]}, "drivers.0.registers.air_temperature",
     "ag-001-soil (RS-485 soil moisture/temperature/EC probe) does not report"),
    ({"site": "ag-001", "drivers": [SOIL_PROBE, SOIL_PROBE]},
     "drivers.1.registers.soil_moisture", "already read by drivers.0"),
    ({"site": "ag-001", "drivers": [{"type": "ds18b20", "device": "ag-001-soil",
                                     "sensors": {"soil_temperature": "29-1"}}]},
     "drivers.0.sensors.soil_temperature", "should match pattern"),
    ({"site": "ag-001", "drivers": [{**SOIL_PROBE, "interval_s": 0}]}, "drivers.0.interval_s",
     "greater than 0"),
    ({"site": "ag-001", "broker": {"url": "mqtt://h:1", "ca_file": "/etc/hosts"}},
     "broker.ca_file", "only used with an mqtts:// url"),
    ({"site": "ag-001", "broker": {"url": "mqtts://h:1", "ca_file": "/nonexistent.pem"}},
     "broker.ca_file", "cannot read"),
])
def test_each_problem_names_its_field(data, path, message):
    found = problems(data)
    assert any(p == path and message in m for p, m in found), found


def test_all_problems_are_reported_at_once():
    found = problems({"site": "ag-001", "health": {"interval_s": -1},
                      "drivers": [{**SOIL_PROBE, "port": 0}, {**SOIL_PROBE, "unit": 300}]})
    assert {p for p, _ in found} == {"health.interval_s", "drivers.0.port", "drivers.1.unit"}


def test_credentials_from_the_url_a_field_or_a_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    address = parse_config({"site": "ag-001", "broker": {
        "url": "mqtts://edge:inline@broker.example:8883", "username": "ag-001",
        "password_file": str(secret)}}).broker.address()
    assert (address.host, address.port, address.tls) == ("broker.example", 8883, True)
    assert (address.username, address.password) == ("ag-001", "s3cret")
    address = parse_config({"site": "ag-001", "broker": {
        "url": "mqtt://edge:inline@h:1883"}}).broker.address()
    assert (address.username, address.password, address.tls) == ("edge", "inline", False)
    assert "inline" not in repr(parse_config({"site": "ag-001", "broker": {
        "password": "inline"}}))


@pytest.mark.parametrize(("text", "message"), [
    ("site: [unclosed", "not valid YAML: line 1"),
    ("", "must be a mapping"),
    ("- a list", "must be a mapping"),
])
def test_unreadable_files(tmp_path, text, message):
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_hex_sentinels(tmp_path):
    path = tmp_path / "edge.yaml"
    path.write_text("site: ag-001\n"
                    "drivers:\n"
                    "  - type: modbus_tcp\n"
                    "    device: ag-001-soil\n"
                    "    host: 10.0.0.5\n"
                    "    registers:\n"
                    "      soil_moisture: {address: 0, scale: 0.1, invalid: [0xFFFF, 0x7FFF]}\n")
    register = load_config(path).drivers[0].registers["soil_moisture"]
    assert register.invalid == (0xFFFF, 0x7FFF)
