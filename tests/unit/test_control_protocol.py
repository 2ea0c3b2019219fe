"""The control messages of protocol/control.py: round trips and refusals."""

from __future__ import annotations

import json

import pytest

from tidefield.protocol import control
from tidefield.protocol.control import (
    Action,
    Command,
    CommandResult,
    CommandState,
    DesiredConfig,
    ReportedConfig,
    Settings,
    Threshold,
)
from tidefield.protocol.errors import IdentityMismatch, MalformedPayload, UnsupportedSchema
from tidefield.protocol.topics import Channel, parse_topic

SETTINGS = Settings(interval_s=30.0, metrics=("dissolved_oxygen",),
                    thresholds=(("dissolved_oxygen", Threshold(3.0, None)),),
                    log_level="INFO", batch_max_readings=100, batch_max_wait_s=2.0)


def test_topics_of_a_device():
    assert control.config_topic("oc-001", "oc-001-gw") == "tf/v1/oc-001/oc-001-gw/down/config"
    assert control.result_topic("oc-001", "oc-001-gw") == "tf/v1/oc-001/oc-001-gw/reply/command"
    topic = parse_topic("tf/v1/oc-001/oc-001-gw/reply/config")
    assert (topic.channel, topic.rest) == (Channel.REPLY, "config")


def test_configuration_round_trips():
    desired = DesiredConfig("oc-001", "oc-001-gw", 7, SETTINGS, 1_764_000_000_000)
    assert control.decode_desired(control.encode_desired(desired)) == desired
    reported = ReportedConfig("oc-001", "oc-001-gw", 6, Settings(), 1_764_000_000_001,
                              error="no", refused=7)
    assert control.decode_reported(control.encode_reported(reported)) == reported


def test_command_and_result_round_trip():
    command = Command("oc-001", "oc-001-gw", "cmd-0001-abcd", Action.SET, 1000, 61_000,
                      actuator="aerator", state="on", duration_s=600.0)
    assert control.decode_command(control.encode_command(command)) == command
    result = CommandResult("oc-001", "oc-001-gw", "cmd-0001-abcd", CommandState.FAILED, 2000,
                           reason="min off-time")
    assert control.decode_result(control.encode_result(result)) == result


def _command(**changes) -> bytes:
    body = {"v": 1, "site": "oc-001", "device": "oc-001-gw", "id": "cmd-0001-abcd",
            "action": "set", "actuator": "aerator", "state": "on", "issued": 1,
            "expires": 2, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(("changes", "message"), [
    ({"action": "explode"}, "'action' must be one of"),
    ({"id": "short"}, "command id"),
    ({"actuator": None}, "needs 'actuator'"),
    ({"state": "half"}, "on or off"),
    ({"state": None}, "'state' \\(on/off\\) or 'value'"),
    ({"value": 70000, "state": None}, "does not fit"),
    ({"expires": 1}, "after 'issued'"),
    ({"duration_s": -1}, "duration_s"),
])
def test_bad_commands_are_refused_with_the_reason(changes, message):
    with pytest.raises(MalformedPayload, match=message):
        control.decode_command(_command(**changes))


def test_a_command_for_another_device_on_this_topic_is_refused():
    topic = parse_topic("tf/v1/oc-001/oc-001-sonde/down/command")
    with pytest.raises(IdentityMismatch):
        control.decode_command(_command(), topic=topic)


def test_unknown_schema_and_settings_are_refused():
    with pytest.raises(UnsupportedSchema):
        control.decode_command(_command(v=9))
    with pytest.raises(MalformedPayload, match="unknown setting"):
        control.settings_from_dict({"interval": 3})
    with pytest.raises(MalformedPayload, match=r"low 5\.0 is above high 1\.0"):
        control.settings_from_dict({"thresholds": {"x": {"low": 5, "high": 1}}})
    with pytest.raises(MalformedPayload, match="interval_s"):
        control.settings_from_dict({"interval_s": float("nan")})
