"""Codec round trips (both codecs) and one test per validation reason."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidefield.protocol import codec
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import JSON, MSGPACK, Limits, decode_batch, encode_batch
from tidefield.protocol.errors import (
    IdentityMismatch,
    MalformedPayload,
    NonFiniteValue,
    OutOfRange,
    OversizePayload,
    TimestampInFuture,
    TimestampTooOld,
    UnknownMetric,
    UnsupportedSchema,
)
from tidefield.protocol.messages import Batch, DeviceState, Reading, Receipt, Status
from tidefield.protocol.topics import parse_topic

NOW = 1_795_000_000_000  # 2026-11-18, a fixed "server clock" for the tests
HOUR = 3_600_000
TOPIC = parse_topic("tf/v1/oc-001/oc-001-sonde/up")

ids = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,20}\Z")


@st.composite
def readings(draw):
    name = draw(st.sampled_from(sorted(METRICS)))
    low, high = METRICS[name].physical
    value = draw(st.floats(min_value=low, max_value=high, allow_nan=False))
    time_ms = draw(st.integers(min_value=NOW - 300 * 24 * HOUR, max_value=NOW))
    return Reading(name, time_ms, value)


@st.composite
def batches(draw):
    return Batch(draw(ids), draw(ids), draw(st.integers(0, 2**63 - 1)),
                 tuple(draw(st.lists(readings(), max_size=50))))


@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
@given(batch=batches())
def test_batch_round_trip(content_type, batch):
    decoded = decode_batch(encode_batch(batch, content_type), content_type, now_ms=NOW)
    assert decoded.batch == batch
    assert decoded.rejected == []
    assert decoded.received == len(batch.readings)


@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
@given(site=ids, device=ids, state=st.sampled_from(list(DeviceState)),
       time_ms=st.integers(0, NOW), interval=st.none() | st.integers(1, 86400))
def test_status_round_trip(content_type, site, device, state, time_ms, interval):
    status = Status(site, device, state, time_ms, interval)
    payload = codec.encode_status(status, content_type)
    assert codec.decode_status(payload, content_type) == status


def test_content_type_chooses_the_codec():
    batch = Batch("oc-001", "oc-001-sonde", 1, (Reading("salinity", NOW, 31.5),))
    packed = encode_batch(batch, MSGPACK)
    assert msgpack.unpackb(packed)["seq"] == 1
    assert decode_batch(packed, "application/x-msgpack", now_ms=NOW).batch == batch
    # no content type at all means JSON, so a plain mosquitto_pub works
    assert decode_batch(encode_batch(batch), None, now_ms=NOW).batch == batch
    with pytest.raises(MalformedPayload, match="unsupported content type"):
        decode_batch(packed, "text/csv", now_ms=NOW)


def test_iso_timestamps_are_accepted():
    payload = json.dumps({"v": 1, "site": "oc-001", "device": "oc-001-sonde", "seq": 0,
                          "readings": [{"m": "salinity", "t": "2026-11-18T00:00:00+08:00",
                                        "v": 30}]}).encode()
    reading = decode_batch(payload, now_ms=NOW).batch.readings[0]
    expected = datetime(2026, 11, 17, 16, 0, tzinfo=UTC)  # midnight in Qingdao is 16:00 UTC
    assert reading.time_ms == int(expected.timestamp() * 1000)
    assert isinstance(reading.value, float)


# --- one test per reason ------------------------------------------------------------

def _payload(readings=None, **fields) -> bytes:
    body = {"v": 1, "site": "oc-001", "device": "oc-001-sonde", "seq": 7,
            "readings": readings if readings is not None
            else [{"m": "salinity", "t": NOW, "v": 31.0}]}
    body.update(fields)
    return json.dumps(body).encode()


def _reading_error(reading: dict):
    good = {"m": "water_temperature", "t": NOW, "v": 12.5}
    decoded = decode_batch(_payload([good, reading, good]), topic=TOPIC, now_ms=NOW)
    # the bad reading is refused and both good ones around it are kept
    assert decoded.batch.readings == (Reading("water_temperature", NOW, 12.5),) * 2
    assert decoded.received == 3
    assert len(decoded.rejected) == 1
    error = decoded.rejected[0]
    assert error.index == 1
    return error


def test_unknown_metric():
    error = _reading_error({"m": "moon_phase", "t": NOW, "v": 1})
    assert isinstance(error, UnknownMetric)
    assert error.reason == "unknown_metric"
    assert "unknown metric 'moon_phase'" in str(error)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_value(value):
    error = _reading_error({"m": "salinity", "t": NOW, "v": value})
    assert isinstance(error, NonFiniteValue)
    assert error.reason == "non_finite"
    assert "is not finite" in str(error)


def test_value_outside_the_physical_range():
    error = _reading_error({"m": "salinity", "t": NOW, "v": 46.0})
    assert isinstance(error, OutOfRange)
    assert error.reason == "out_of_range"
    assert "salinity value 46.0 PSU is outside the physical range [0.0, 45.0]" in str(error)


def test_timestamp_in_the_future():
    error = _reading_error({"m": "salinity", "t": NOW + HOUR, "v": 30.0})
    assert isinstance(error, TimestampInFuture)
    assert error.reason == "time_in_future"
    assert "ahead of the server clock" in str(error)


def test_timestamp_too_old():
    error = _reading_error({"m": "salinity", "t": 0, "v": 30.0})
    assert isinstance(error, TimestampTooOld)
    assert error.reason == "time_too_old"
    assert "1970-01-01" in str(error)
    assert "400 days in the past" in str(error)


@pytest.mark.parametrize(("payload", "message"), [
    (b"{not json", "payload is not valid application/json"),
    (b"[1, 2]", "payload must be an object"),
    (_payload(v=None), "no schema version"),
    (_payload(seq=-1), "field 'seq' must be an integer"),
    (_payload(seq="7"), "field 'seq' must be an integer"),
    (_payload(readings={"m": "x"}), "field 'readings' must be a list"),
    (_payload([{"m": "salinity", "t": NOW, "v": "31"}]), "'v' must be a number"),
    (_payload([{"m": "salinity", "t": NOW, "v": True}]), "'v' must be a number"),
    (_payload([{"m": "salinity", "t": "yesterday", "v": 1}]), "'t' must be epoch milliseconds"),
    (_payload([{"m": 5, "t": NOW, "v": 1}]), "'m' must be a metric name"),
    (_payload(site=None), "field 'site' must be a string"),
    (_payload(device="Bad Device"), "device 'Bad Device' must match"),
])
def test_malformed_payload(payload, message):
    with pytest.raises(MalformedPayload) as err:
        decode_batch(payload, now_ms=NOW)
    assert err.value.reason == "malformed"
    assert message in str(err.value)


def test_malformed_msgpack():
    with pytest.raises(MalformedPayload, match="not valid application/msgpack"):
        decode_batch(b"\xc1\xc1", MSGPACK, now_ms=NOW)


def test_unsupported_schema():
    with pytest.raises(UnsupportedSchema) as err:
        decode_batch(_payload(v=2), now_ms=NOW)
    assert err.value.reason == "unsupported_schema"
    assert "schema version 2 is not supported" in str(err.value)


def test_oversize_payload_by_bytes_and_by_readings():
    limits = Limits(max_payload_bytes=200, max_readings=3)
    big = _payload([{"m": "salinity", "t": NOW, "v": 30.0}] * 10)
    with pytest.raises(OversizePayload, match=r"payload of \d+ bytes exceeds the limit of 200"):
        decode_batch(big, now_ms=NOW, limits=limits)
    many = _payload([{"m": "salinity", "t": NOW, "v": 30.0}] * 4)
    with pytest.raises(OversizePayload, match="4 readings exceed the limit of 3") as err:
        decode_batch(many, now_ms=NOW, limits=Limits(max_readings=3))
    assert err.value.reason == "oversize"


def test_identity_mismatch_with_the_topic():
    with pytest.raises(IdentityMismatch) as err:
        decode_batch(_payload(device="oc-002-sonde"), topic=TOPIC, now_ms=NOW)
    assert err.value.reason == "identity_mismatch"
    assert "claims oc-001/oc-002-sonde but was published on oc-001/oc-001-sonde" in str(err.value)


def test_errors_survive_pickling():
    import pickle

    error = _reading_error({"m": "salinity", "t": NOW, "v": 99.0})
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is OutOfRange and copy.index == 1 and str(copy) == str(error)


# --- receipts ------------------------------------------------------------------------

RECEIPT_TOPIC = parse_topic("tf/v1/oc-001/oc-001-sonde/down/receipt")


@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
@given(seqs=st.sets(st.integers(0, 2**40), min_size=1, max_size=50))
def test_receipt_round_trip_names_exactly_the_seqs_stored(content_type, seqs):
    ranges = codec.seq_ranges(seqs)
    receipt = Receipt("oc-001", "oc-001-sonde", ranges)
    decoded = codec.decode_receipt(codec.encode_receipt(receipt, content_type), content_type,
                                   topic=RECEIPT_TOPIC)
    assert decoded == receipt
    probe = set(seqs) | {s + 1 for s in seqs} | {max(s - 1, 0) for s in seqs}
    assert {s for s in probe if decoded.covers(s)} == set(seqs)


def test_seq_ranges_coalesce_runs():
    assert codec.seq_ranges([5, 3, 4, 9, 7, 7, 8, 12]) == ((3, 5), (7, 9), (12, 12))


@pytest.mark.parametrize("stored", [None, [], [[3]], [[5, 4]], [[1, 3], [3, 5]],
                                    [[4, 6], [1, 2]], [[1, True]], [["1", 2]], [[-2, 1]],
                                    [[i, i] for i in range(0, 2002, 2)]])
def test_a_bad_receipt_is_refused_naming_the_field(stored):
    body = {"v": 1, "site": "oc-001", "device": "oc-001-sonde", "stored": stored}
    with pytest.raises(MalformedPayload, match="stored"):
        codec.decode_receipt(json.dumps(body).encode(), topic=RECEIPT_TOPIC)


def test_a_receipt_for_another_device_is_an_identity_mismatch():
    body = {"v": 1, "site": "oc-001", "device": "oc-001-other", "stored": [[1, 2]]}
    with pytest.raises(IdentityMismatch):
        codec.decode_receipt(json.dumps(body).encode(), topic=RECEIPT_TOPIC)


@pytest.mark.parametrize("payload", [b"[" * 100_000 + b"]" * 100_000,
                                     b'{"v":1,"x":' + b"[" * 50_000 + b"]" * 50_000 + b"}"])
def test_deep_nesting_is_malformed_not_a_crash(payload):
    with pytest.raises(MalformedPayload, match="not valid application/json"):
        decode_batch(payload, JSON, now_ms=NOW)


def test_deep_msgpack_nesting_is_malformed():
    payload = b"\x91" * 100_000 + b"\xc0"  # fixarray of one, 100,000 deep
    with pytest.raises(MalformedPayload, match="not valid application/msgpack"):
        decode_batch(payload, MSGPACK, now_ms=NOW)


def test_a_metric_name_of_the_wrong_type_is_malformed():
    body = {"v": 1, "site": "oc-001", "device": "oc-001-sonde", "seq": 1,
            "readings": [{"m": ["salinity"], "t": NOW, "v": 30.0}]}
    with pytest.raises(MalformedPayload, match="'m' must be a metric name"):
        decode_batch(json.dumps(body).encode(), JSON, now_ms=NOW)
