import pytest

from tidefield.protocol.errors import BadTopic
from tidefield.protocol.topics import (
    Channel,
    Topic,
    alerts_topic,
    down_topic,
    parse_topic,
    status_topic,
    up_topic,
)


@pytest.mark.parametrize(("topic", "expected"), [
    ("tf/v1/ag-001/ag-001-soil/up", Topic("ag-001", "ag-001-soil", Channel.UP)),
    ("tf/v1/oc-007/oc-007-sonde/status", Topic("oc-007", "oc-007-sonde", Channel.STATUS)),
    ("tf/v1/oc-007/oc-007-gw/down/config",
     Topic("oc-007", "oc-007-gw", Channel.DOWN, "config")),
    ("tf/v1/oc-007/alerts", Topic("oc-007", None, Channel.ALERTS)),
])
def test_parse_and_format_round_trip(topic, expected):
    parsed = parse_topic(topic)
    assert parsed == expected
    assert str(parsed) == topic


@pytest.mark.parametrize("topic", [
    "tf/v2/ag-001/ag-001-soil/up",      # another protocol version
    "tf/v1/ag-001/ag-001-soil",         # no channel
    "tf/v1/ag-001/ag-001-soil/sideways",
    "tf/v1/AG-001/ag-001-soil/up",      # ids are lower case
    "tf/v1/ag-001/ag-001-soil/up/extra",
    "tf/v1/+/ag-001-soil/up",           # wildcards are not concrete topics
    "tf/v1//dev/up",
])
def test_bad_topics_are_refused_with_the_topic_named(topic):
    with pytest.raises(BadTopic) as err:
        parse_topic(topic)
    assert topic in str(err.value)
    assert err.value.reason == "bad_topic"


def test_builders():
    assert up_topic("ag-001", "ag-001-soil") == "tf/v1/ag-001/ag-001-soil/up"
    assert status_topic("ag-001", "ag-001-soil") == "tf/v1/ag-001/ag-001-soil/status"
    assert down_topic("ag-001", "ag-001-gw", "config") == "tf/v1/ag-001/ag-001-gw/down/config"
    assert alerts_topic("oc-002") == "tf/v1/oc-002/alerts"
    with pytest.raises(BadTopic):
        up_topic("ag 001", "x")
