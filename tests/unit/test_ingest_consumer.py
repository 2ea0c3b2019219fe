"""The ingest consumer's receive path (``BulkClient``) against paho's own, over a real
socket pair: what it delivers and what it acknowledges."""

from __future__ import annotations

import random
import socket
import struct

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tidefield.server.ingest.consumer import BulkClient


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def publish(topic: str, payload: bytes, *, qos: int = 1, mid: int = 1, dup: bool = False,
            properties: bytes = b"") -> bytes:
    body = _string(topic.encode()) + (struct.pack("!H", mid) if qos else b"") \
        + _varint(len(properties)) + properties + payload
    return bytes([0x30 | (0x08 if dup else 0) | qos << 1]) + _varint(len(body)) + body


CONTENT_TYPE = b"\x03" + _string(b"application/msgpack")
EXPIRY = b"\x02" + struct.pack("!I", 3600)
RESPONSE = b"\x08" + _string(b"tf/v1/a/b/down/reply") + b"\x09" + _string(b"\x00\x01")
USER_PROPERTY = b"\x26" + _string(b"origin") + _string(b"lab")

# (packet, what deliver gets: topic, payload, content type, packet id, QoS, redelivered)
CASES = [
    (publish("tf/v1/oc-001/oc-001-sonde/up", b"\x85\xa1v\x01", properties=CONTENT_TYPE,
             mid=7),
     ("tf/v1/oc-001/oc-001-sonde/up", b"\x85\xa1v\x01", "application/msgpack", 7, 1, False)),
    (publish("tf/v1/ag-001/ag-001-soil/up", b'{"v":1}', mid=65535, dup=True),
     ("tf/v1/ag-001/ag-001-soil/up", b'{"v":1}', None, 65535, 1, True)),
    (publish("tf/v1/ag-001/ag-001-soil/status", b"{}", qos=0, properties=EXPIRY),
     ("tf/v1/ag-001/ag-001-soil/status", b"{}", None, 0, 0, False)),
    (publish("tf/v1/ä-1/gerät/up", b"", properties=EXPIRY + CONTENT_TYPE + RESPONSE, mid=2),
     ("tf/v1/ä-1/gerät/up", b"", "application/msgpack", 2, 1, False)),
    (publish("tf/v1/x/y/up", bytes(range(256)) * 1200, mid=300),  # 300 KB: many reads
     ("tf/v1/x/y/up", bytes(range(256)) * 1200, None, 300, 1, False)),
]


@pytest.fixture
def wired():
    """A BulkClient reading one end of a socket pair; the test writes to the other."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client = BulkClient(CallbackAPIVersion.VERSION2, client_id="test",
                        protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    client._sock = ours  # the connection paho would have made
    delivered: list[tuple] = []
    client.deliver = lambda *message: delivered.append(message)
    yield client, theirs, delivered
    client._sock = None
    ours.close()
    theirs.close()


def read_all(client: BulkClient, theirs: socket.socket, data: bytes, seed: int) -> None:
    """Write ``data`` in pieces of random sizes (packets cut anywhere), reading after each."""
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        step = rng.choice([1, 2, 3, 17, 1000, 70_000])
        theirs.sendall(data[at:at + step])
        at += step
        assert client.loop_read() == paho.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("seed", range(5))
def test_messages_cut_anywhere_are_delivered_whole_and_in_order(wired, seed):
    client, theirs, delivered = wired
    read_all(client, theirs, b"".join(packet for packet, _ in CASES) * 3, seed)
    assert delivered == [expected for _, expected in CASES] * 3


def test_a_property_the_fast_path_does_not_step_over_goes_the_way_of_paho(wired):
    client, theirs, delivered = wired
    seen: list[paho.MQTTMessage] = []
    client.on_message = lambda c, u, message: seen.append(message)
    packet = publish("tf/v1/a/b/up", b"payload", mid=9,
                     properties=CONTENT_TYPE + USER_PROPERTY)
    read_all(client, theirs, packet + CASES[1][0], seed=1)
    assert [(m.topic, m.payload, m.mid, m.properties.ContentType) for m in seen] \
        == [("tf/v1/a/b/up", b"payload", 9, "application/msgpack")]
    assert delivered == [CASES[1][1]]  # the next one took the fast path again


def test_acknowledgements_go_out_together_as_pubacks_of_those_ids(wired):
    client, theirs, _ = wired
    client.ack_many([1, 300, 65535])
    client.defer_ack(42)  # another partition's: with the rest of the next read
    read_all(client, theirs, CASES[0][0], seed=0)
    theirs.settimeout(2)
    expected = b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in (1, 300, 65535, 42))
    received = b""
    while len(received) < len(expected):
        received += theirs.recv(1024)
    assert received == expected


def test_a_lost_connection_forgets_half_a_packet(wired):
    client, theirs, delivered = wired
    theirs.sendall(CASES[0][0][:5])
    client.loop_read()
    client._sock_close()
    assert client._received == b"" and delivered == []


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(2)
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_pubacks_of_our_publishes_end_them_and_let_what_waited_go(wired):
    """Receipts: three in a window of two; each kind of PUBACK (success, a reason code,
    one with properties that goes paho's way) ends its publish, and the one held back
    goes out once there is room."""
    client, theirs, _ = wired
    client.max_inflight_messages_set(2)
    infos = [client.publish(f"tf/v1/a/d{i}/down/receipt", b"{}", qos=1) for i in range(3)]
    first_two = read_exactly(theirs, 2 * len(publish("tf/v1/a/d0/down/receipt", b"{}")))
    assert first_two.count(b"down/receipt") == 2  # the third waits for room
    reason_string = b"\x1f" + _string(b"no subscribers")
    theirs.sendall(struct.pack("!BBH", 0x40, 2, infos[0].mid))
    client.loop_read()
    third = read_exactly(theirs, len(publish("tf/v1/a/d2/down/receipt", b"{}")))
    assert b"tf/v1/a/d2/down/receipt" in third
    theirs.sendall(struct.pack("!BBHB", 0x40, 3, infos[1].mid, 0x10)
                   + bytes([0x40, 4 + len(reason_string)]) + struct.pack("!HB", infos[2].mid, 0x10)
                   + _varint(len(reason_string)) + reason_string)
    client.loop_read()
    assert all(info.is_published() for info in infos)
    assert not client._out_messages and client._inflight_messages == 0


def test_receipts_written_together_are_qos0_publishes_paho_reads_back(wired):
    """``publish_many_qos0``: one write of many packets, each read by paho's own parser
    (``deliver`` unset: the stock path) as the topic and payload given, at QoS 0."""
    client, theirs, _ = wired
    receipts = [(f"tf/v1/oc-001/oc-001-d{i}/down/receipt", b'{"v":1,"stored":[[0,%d]]}' % i)
                for i in range(3)]
    receipts.append(("tf/v1/x/y/down/receipt", bytes(range(256)) * 600))  # 150 KB: a long
    client.publish_many_qos0(receipts)  # remaining length, and many writes of the socket
    while client._out_packet:
        assert client.loop_write() == paho.MQTT_ERR_SUCCESS
    reader_end, writer_end = socket.socketpair()
    reader_end.setblocking(False)
    reader = BulkClient(CallbackAPIVersion.VERSION2, client_id="reader",
                        protocol=MQTTProtocolVersion.MQTTv5)
    reader._sock = reader_end
    seen: list[paho.MQTTMessage] = []
    reader.on_message = lambda c, u, message: seen.append(message)
    expected = sum(len(t) + len(p) for t, p in receipts)
    data = b""
    theirs.settimeout(2)
    while len(data) < expected:  # (headers make it longer: read what has come)
        data += theirs.recv(1 << 20)
    try:
        theirs.setblocking(False)
        while chunk := theirs.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    try:
        read_all(reader, writer_end, data, seed=2)
        assert [(m.topic, m.payload, m.qos) for m in seen] == \
            [(topic, payload, 0) for topic, payload in receipts]
    finally:
        reader._sock = None
        reader_end.close()
        writer_end.close()
