"""Pieces of the detector service that need no database: the alert notice on the wire,
partitions, and checkpoints of the engine's state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tidefield.protocol.codec import JSON, MSGPACK, decode_alert, encode_alert
from tidefield.protocol.errors import IdentityMismatch, MalformedPayload, UnsupportedSchema
from tidefield.protocol.messages import AlertAction, AlertNotice
from tidefield.protocol.topics import alerts_topic, parse_topic
from tidefield.server.detect._layout import RS_HIGH_SLOT, S_PU, S_PUU, S_PUV, S_SUSPECT_SINCE
from tidefield.server.detect.detector import Detector, SeriesInfo
from tidefield.server.detect.engine import Engine
from tidefield.server.detect.rules import load_rules
from tidefield.server.detect.store import Partition, PartitionError

NOTICE = AlertNotice(event_id=812, alert_id=97, action=AlertAction.OPENED, site="oc-021",
                     device=None, series_id=None, rule="hypoxia", category="event",
                     severity="critical", state="open", message="dissolved oxygen 2.71 mg/L",
                     time_ms=1751328000000, opened_ms=1751328000000, value=2.71, peak=2.5)


@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
def test_alert_notice_round_trip(content_type):
    payload = encode_alert(NOTICE, content_type)
    assert decode_alert(payload, content_type, topic=parse_topic(alerts_topic("oc-021"))) == NOTICE


def test_alert_notice_is_plain_json_without_nan():
    notice = AlertNotice(**{**{f: getattr(NOTICE, f) for f in NOTICE.__slots__},
                            "value": math.nan, "action": AlertAction.CLOSED,
                            "closed_ms": 1751331600000})
    body = json.loads(encode_alert(notice))
    assert body["value"] is None and body["closed"] == 1751331600000
    assert body["action"] == "closed" and body["v"] == 1


@pytest.mark.parametrize("change, error", [
    ({"action": "exploded"}, MalformedPayload),
    ({"severity": "dire"}, MalformedPayload),
    ({"event": "812"}, MalformedPayload),
    ({"t": True}, MalformedPayload),
    ({"site": "OC 021"}, MalformedPayload),
    ({"v": 2}, UnsupportedSchema),
])
def test_bad_alert_notices_say_what_is_wrong(change, error):
    body = {**json.loads(encode_alert(NOTICE)), **change}
    with pytest.raises(error):
        decode_alert(json.dumps(body).encode())


def test_alert_notice_on_another_sites_topic_is_refused():
    with pytest.raises(IdentityMismatch):
        decode_alert(encode_alert(NOTICE), topic=parse_topic(alerts_topic("oc-022")))


def test_partitions_split_sites_between_processes():
    sites = [f"oc-{i:03d}" for i in range(1, 81)]
    parts = [Partition.parse(f"{i}/3") for i in range(3)]
    owners = [[p for p in parts if p.owns(s)] for s in sites]
    assert all(len(o) == 1 for o in owners)
    assert all(sum(p.owns(s) for s in sites) > 10 for p in parts)
    assert str(parts[2]) == "2/3"
    for bad in ("3/3", "1", "a/b", "0/0", "-1/2"):
        with pytest.raises(PartitionError):
            Partition.parse(bad)


def _engine(keys):
    series = [SeriesInfo(k, "oc-021", "oc-021-sonde", "dissolved_oxygen", 60.0, "sonde",
                         "cage_farm") for k in keys]
    return Engine(Detector(series), load_rules())


def test_checkpoint_restores_the_state_bit_for_bit():
    rng = np.random.default_rng(3)
    times = np.arange(500, dtype=np.int64) * 60_000
    values = 7 + rng.normal(0, 0.1, 500)
    a = _engine([11, 12])
    a.process(np.zeros(500, dtype=np.int64), times, values)
    b = _engine([11, 12])
    assert b.restore(a.checkpoint()) is True
    for name, array in a.state_arrays().items():
        np.testing.assert_array_equal(b.state_arrays()[name], array)


def test_checkpoint_of_other_series_carries_over_the_ones_that_remain():
    a = _engine([11, 12])
    a.process(np.array([0, 1]), np.array([0, 0]), np.array([7.0, 6.0]))
    b = _engine([12, 13])  # 11 left the registry, 13 joined
    assert b.restore(a.checkpoint()) is False
    state = b.state_arrays()["state"]
    np.testing.assert_array_equal(state[0], a.state_arrays()["state"][1])
    np.testing.assert_array_equal(state[1], _engine([13]).state_arrays()["state"][0])


def test_checkpoint_taken_before_the_state_grew_carries_over_its_columns():
    a = _engine([11, 12])
    a.process(np.array([0, 1]), np.array([0, 0]), np.array([7.0, 6.0]))
    old = a.detector.state.copy()
    a.detector.state = np.ascontiguousarray(old[:, :24])  # the state row before kern
    b = _engine([11, 12])
    assert b.restore(a.checkpoint()) is True
    state = b.state_arrays()["state"]
    np.testing.assert_array_equal(state[:, :24], old[:, :24])
    fresh = _engine([11, 12]).state_arrays()["state"]
    np.testing.assert_array_equal(np.delete(state, S_PU, axis=1)[:, 24:],
                                  np.delete(fresh, S_PU, axis=1)[:, 24:])
    # the drift check's regression restarts: its mean is taken from the next hour's median
    assert np.isnan(state[:, S_PU]).all()


@pytest.mark.parametrize("same_series", [True, False])
def test_checkpoint_taken_before_the_rule_state_grew_carries_over_its_columns(same_series):
    # a checkpoint from before the windowed high (RULE_STATE_COLUMNS up to `seen`): the
    # rule instances keep what they held, the new columns start empty
    a = _engine([11, 12])
    a.process(np.array([0, 1, 0]), np.array([0, 0, 60_000]), np.array([7.0, 2.0, 2.5]))
    old = a.rules.state.copy()
    a.rules.state = np.ascontiguousarray(old[:, :RS_HIGH_SLOT])
    b = _engine([11, 12] if same_series else [12, 13])
    assert b.restore(a.checkpoint()) is same_series
    rules = b.state_arrays()["rules"]
    fresh = _engine([11, 12]).state_arrays()["rules"]
    # series 12's instances: the second half of a's, the first of b's (one rule set each)
    half = len(rules) // 2
    kept, were = ((slice(None), slice(None)) if same_series
                  else (slice(None, half), slice(half, None)))
    np.testing.assert_array_equal(rules[kept, :RS_HIGH_SLOT], old[were, :RS_HIGH_SLOT])
    np.testing.assert_array_equal(rules[:, RS_HIGH_SLOT:], fresh[:, RS_HIGH_SLOT:])


def test_checkpoint_from_before_the_drift_gain_restarts_the_level_rows_regression():
    rng = np.random.default_rng(4)
    times = np.arange(300, dtype=np.int64) * 60_000
    a = _engine([11, 12])
    a.process(np.zeros(300, dtype=np.int64), times, 7 + rng.normal(0, 0.1, 300))
    a.detector.state[:, S_PU:S_PUV + 1] = 3.0  # what the pair check would have left
    a.detector.state = np.ascontiguousarray(a.detector.state[:, :S_SUSPECT_SINCE])
    b = _engine([11, 12])
    assert b.restore(a.checkpoint()) is True
    state = b.state_arrays()["state"]
    assert np.isnan(state[:, S_PU]).all()  # dissolved oxygen is compared across sites
    assert (state[:, [S_PUU, S_PUV]] == 0.0).all()
    assert (state[:, S_SUSPECT_SINCE] == -1.0).all()
