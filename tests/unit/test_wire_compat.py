"""The wire contract has a version, and a newer build reads what older agents send: the
payloads in tests/fixtures/wire/ are those agents' own (made by their encoder, kept as
they were), and the current codec must decode each to the readings they carried."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tidefield.protocol import codec
from tidefield.protocol.errors import UnsupportedSchema
from tidefield.protocol.messages import SCHEMA_VERSION, SUPPORTED_SCHEMAS, DeviceState
from tidefield.protocol.topics import Channel, parse_topic

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wire"
VERSIONS = sorted(FIXTURES.glob("v*/messages.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def payload_of(message: dict) -> bytes:
    if "payload_base64" in message:
        return base64.b64decode(message["payload_base64"])
    return message["payload"].encode()


def test_every_supported_schema_has_its_recorded_payloads():
    recorded = {load(path)["schema"] for path in VERSIONS}
    assert recorded == set(SUPPORTED_SCHEMAS)
    assert SCHEMA_VERSION in SUPPORTED_SCHEMAS


@pytest.mark.parametrize("path", VERSIONS, ids=lambda p: p.parent.name)
def test_payloads_of_older_agents_decode_to_what_they_carried(path):
    recorded = load(path)
    telemetry = 0
    for message in recorded["messages"]:
        topic = parse_topic(message["topic"])
        if topic.channel is Channel.UP:
            decoded = codec.decode_batch(payload_of(message), message["content_type"],
                                         topic=topic, now_ms=recorded["now_ms"])
            assert decoded.rejected == [], message["note"]
            got = [[m, t, v] for m, t, v in zip(decoded.metrics, decoded.times_ms,
                                                 decoded.values, strict=True)]
            assert got == message["readings"], message["note"]
            telemetry += 1
        else:
            status = codec.decode_status(payload_of(message), message["content_type"],
                                         topic=topic)
            assert status.state is DeviceState.ONLINE
    assert telemetry >= 5


def test_a_schema_this_build_does_not_read_is_refused_naming_what_it_reads():
    body = {"v": max(SUPPORTED_SCHEMAS) + 1, "site": "oc-001", "device": "oc-001-sonde",
            "seq": 0, "readings": []}
    with pytest.raises(UnsupportedSchema, match=r"reads \[1\]"):
        codec.decode_batch(json.dumps(body).encode(), now_ms=0)
    for odd in ([1], {"v": 1}, True, "1"):
        with pytest.raises(UnsupportedSchema):
            codec.decode_batch(json.dumps({**body, "v": odd}).encode(), now_ms=0)
