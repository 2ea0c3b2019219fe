"""Fuzzing the codec (issue 17): hostile payloads of every kind end in a Decoded or a
ProtocolError (a reject with its reason), never in another exception, whatever the
codec. A fixed budget (max_examples, no deadline) keeps it to seconds in CI."""

from __future__ import annotations

import json

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidefield.protocol.codec import JSON, MSGPACK, decode_batch, decode_status
from tidefield.protocol.errors import ProtocolError
from tidefield.protocol.topics import parse_topic

NOW = 1_795_000_000_000
TOPIC = parse_topic("tf/v1/oc-001/oc-001-sonde/up")
BUDGET = settings(max_examples=300, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

numbers = st.one_of(st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, 2**64, -(2**63),
                                     10**400, -(10**400)]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20),
                    st.binary(max_size=20))
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=5)),
    max_leaves=30)
reading = st.fixed_dictionaries({}, optional={
    "m": st.one_of(st.sampled_from(["salinity", "water_temperature", "moonlight"]), anything),
    "t": st.one_of(st.integers(NOW - 10**12, NOW + 10**12), anything,
                   st.sampled_from(["2026-11-18T00:00:00Z", "2026-11-18", "nope"])),
    "v": st.one_of(numbers, anything)})
body = st.fixed_dictionaries({}, optional={
    "v": st.one_of(st.just(1), anything), "site": st.one_of(st.just("oc-001"), anything),
    "device": st.one_of(st.just("oc-001-sonde"), anything),
    "seq": st.one_of(st.integers(-1, 2**64), anything),
    "readings": st.one_of(st.lists(st.one_of(reading, anything), max_size=20), anything),
    "state": anything, "t": anything, "interval_s": anything})


def _json(value: object) -> bytes:
    return json.dumps(value, allow_nan=True, default=repr).encode("utf-8", "surrogatepass")


def nested(depth: int, open_: bytes, close: bytes) -> bytes:
    return open_ * depth + close * depth


hostile_json = st.one_of(
    body.map(_json),
    st.binary(max_size=200),  # anything at all, invalid UTF-8 included
    st.integers(1, 200_000).map(lambda d: nested(d, b"[", b"]")),
    st.integers(1, 100_000).map(lambda d: b'{"v":1,"readings":' + nested(d, b"[", b"]") + b"}"),
    st.sampled_from([b'{"v":1,"v":2}', b'{"v":NaN}', b'{"v":Infinity,"seq":-Infinity}',
                     b'{"v":1,"site":"\\ud800"}', b'{"v":1e999}', b"\xff\xfe{}",
                     b'{"v":1,"site":"oc-001","device":"oc-001-sonde","seq":1,"readings":['
                     + b",".join([b'{"m":"salinity","t":1795000000000,"v":30}'] * 10_000)
                     + b"]}"]))


def _msgpack(value: object) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)
    except OverflowError:  # an integer msgpack cannot hold: send its text instead
        return msgpack.packb(value, use_bin_type=True, default=repr,
                             strict_types=True)


hostile_msgpack = st.one_of(
    body.map(_msgpack),
    st.binary(max_size=200),
    st.integers(1, 100_000).map(lambda d: b"\x91" * d + b"\xc0"),
    st.builds(lambda code, data: _msgpack({"v": 1, "seq": msgpack.ExtType(code, data)}),
              st.integers(0, 127), st.binary(max_size=16)),
    st.sampled_from([b"\xc7\x0c\xff" + bytes(12),  # a timestamp ext, 96-bit
                     b"\xd6\xff\x00\x00\x00\x00",  # a timestamp ext, 32-bit
                     b"\x81\x91\x01\x01",  # a map with an array as its key
                     b"\xdd\xff\xff\xff\xff"]))  # an array claiming 4 billion items


def _ends(payload: bytes, content_type: str) -> None:
    for decode in (lambda: decode_batch(payload, content_type, topic=TOPIC, now_ms=NOW),
                   lambda: decode_status(payload, content_type, topic=TOPIC)):
        try:
            decode()
        except ProtocolError as exc:
            assert exc.reason and exc.message


@BUDGET
@given(payload=hostile_json)
def test_hostile_json_is_decoded_or_refused_with_a_reason(payload):
    _ends(payload, JSON)


@BUDGET
@given(payload=hostile_msgpack)
def test_hostile_msgpack_is_decoded_or_refused_with_a_reason(payload):
    _ends(payload, MSGPACK)
