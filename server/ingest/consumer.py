"""The MQTT side of an ingest process: the only module here that talks to the broker.

Partitioned subscriptions, not shared ones. Each of the N ingest processes holds a
persistent MQTT v5 session (clean start off, a session expiry) subscribed to all
telemetry, and keeps the devices of its own partition (crc32(device) mod N); it
acknowledges the others' messages unread. Why not a `$share/...` subscription: Mosquitto
(2.0.11 in Debian 12, and 2.0.21 by its source) does not restore shared subscriptions
from its persistence file, so after a broker restart every message published before the
workers re-subscribe is dropped; tests/integration/test_ingest_service.py shows it.
Normal subscriptions are restored, so the broker keeps queueing for each partition
through its own restarts and the workers' crashes. A bonus: one device's batches always
go to the same process, so workers never contend for the same rollup or status rows.

``TIDEFIELD_INGEST_SUBSCRIPTION=shared`` trades that for speed: telemetry comes through
one shared subscription (``$share/tidefield-ingest-N/...``), so the broker sends each
message once, to one worker, round robin per message, and no worker reads the others'
(1.2 to 1.6 times the stored rate of 1-reading messages, docs/ingest-robustness.md).
Still exactly once: the (device, seq) claim in the database decides, whichever worker
stores a batch; each worker receipts what it stored, and device status and rollups are
sums and maxima written in a fixed row order. What it gives up: after a broker restart,
what devices publish before the workers have subscribed again is dropped by Mosquitto
2.0; an agent that waits for receipts sends it again, one that trusts PUBACKs loses it.
Status messages stay partitioned.

``manual_ack``: a message is acknowledged only when the transaction holding its rows (or
its reject) has committed; then the device gets a receipt (``receipts``) on its own
``down/receipt`` topic, sent through this module's client. Receive Maximum bounds the
unacknowledged messages in flight, which is our back-pressure when the database is slow.

The receive path is paho's, made cheap for a busy subscriber (``BulkClient``): with
partitioned subscriptions every worker receives every message, so what paho spends per
message is paid N times. Stock
paho made three system calls and a select per message, parsed every MQTT v5 property into
objects, and woke its own loop once per acknowledgement; at 1 reading a message that was
most of a worker's CPU (docs/ingest-robustness.md has the profile).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tidefield.protocol import mqtt
from tidefield.protocol.topics import ALL_STATUS, ALL_UP

from .pipeline import Envelope, device_of_topic
from .worker import Worker

log = logging.getLogger(__name__)

SUBSCRIPTIONS = (ALL_UP, ALL_STATUS)
Subscription = Literal["partitioned", "shared"]


def shared_up(partitions: int) -> str:
    """The telemetry filter of ``shared`` mode. The worker count is in the group's name,
    as it is in the client ids: the sessions of a service that ran with another count
    live on for their expiry, and in a group of their own they take copies (as
    partitioned sessions do), not a share of what the live workers should get."""
    return f"$share/tidefield-ingest-{partitions}/{ALL_UP}"


def subscriptions(mode: Subscription, partitions: int) -> tuple[list[str], list[str]]:
    """What a worker subscribes to, and what it unsubscribes from (the other mode's
    telemetry filter, which its persistent session may still hold from before a switch:
    kept, it would deliver every message a second time)."""
    if mode == "shared" and partitions > 1:
        return [shared_up(partitions), ALL_STATUS], [ALL_UP]
    return list(SUBSCRIPTIONS), [shared_up(partitions)]


def partition_of(device_id: str, partitions: int) -> int:
    return zlib.crc32(device_id.encode()) % partitions


def client_id(partition: int, partitions: int) -> str:
    # The partition count is part of the id: a service restarted with another count
    # starts new sessions rather than reading old ones with the wrong partitioning.
    return f"tidefield-ingest-{partitions}-{partition}"


def claim_slot(lock_dir: Path, max_slots: int) -> tuple[int, object]:
    """A stable small number for this worker process (its partition), held by a file lock.

    A worker that crashed and is restarted takes the slot its predecessor held, and so
    its persistent session, with the messages that were in flight and queued.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in range(max_slots):
        handle = open(lock_dir / f"slot-{slot}.lock", "w")  # noqa: SIM115 (held for life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.write(str(os.getpid()))
        handle.flush()
        return slot, handle
    raise RuntimeError(f"all {max_slots} ingest slots in {lock_dir} are taken")


RECEIVE_BYTES = 256 * 1024  # read from the socket at once; packets are cut from it
READ_BURST = 5000  # packets read before paho's loop may write (acknowledgements) again
_PUBACK = struct.Struct("!BBH")  # MQTT v5 PUBACK, success: no reason code, no properties
_PUBACK_COMMAND = 0x40
PUBLISH = 0x30
_TOPIC_LENGTH = struct.Struct("!H")


def mqtt_varint(n: int) -> bytes:
    """An MQTT variable byte integer (a packet's remaining length)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
# MQTT v5 PUBLISH properties the fast path can step over: id -> fixed length (None: a
# two-byte length prefix). Anything else goes the stock way.
_SKIPPABLE = {0x01: 1, 0x02: 4, 0x23: 2, 0x03: None, 0x08: None, 0x09: None}

# shared by every PUBACK without properties (nothing keeps or changes them)
_PUBACK_REASONS: dict[int, ReasonCode] = {}
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)

# what a received message is handed on as: topic, payload, content type, packet id, QoS,
# redelivered (DUP)
Deliver = Callable[[str, bytes, "str | None", int, int, bool], None]


class BulkClient(paho.Client):
    """paho's client with a receive path for thousands of messages a second.

    * Reads the socket in ``RECEIVE_BYTES`` slices and cuts packets from that buffer,
      instead of paho's three ``recv`` calls (and a ``select``) per packet.
    * Decodes a PUBLISH straight into ``deliver``'s arguments (topic, payload, content
      type, packet id), without paho's message and property objects or its callback
      lookup; a packet with a property it does not step over, or a topic that is not
      UTF-8, goes paho's own way (``on_message``).
    * Acknowledges many packet ids as one write (``ack_many``, ``defer_ack``), not one
      loop wake-up and one ``send`` each.
    * Takes the broker's PUBACKs for its own publishes (receipts: about one per message
      when devices send small messages) without paho's reason-code and property objects
      for each, and without paho's walk over every message in flight per PUBACK, looking
      for one held back, unless one was (the in-flight window was full).

    It overrides private methods of paho (``_sock_recv``, ``_handle_publish``,
    ``loop_read``, ``_sock_close``, ``_handle_pubackcomp``, ``_update_inflight``), checked
    against paho 2.2 (pyproject stops before 2.3: a new release is checked first);
    tests/integration/test_ingest_service.py and test_receipts.py run it on Mosquitto.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver: Deliver | None = None
        self.after_read: Callable[[], None] | None = None  # once per read of the socket
        self._received = b""
        self._received_at = 0
        self._deferred_acks: list[int] = []  # only the network thread touches it
        self._held_back = False  # a publish may be waiting for room in the window

    # --- reading ------------------------------------------------------------------------
    def _sock_recv(self, bufsize: int) -> bytes:
        if self._received_at >= len(self._received):
            data = super()._sock_recv(RECEIVE_BYTES)  # BlockingIOError when drained
            if not data:
                return data  # the connection is closed
            self._received, self._received_at = data, 0
        start = self._received_at
        self._received_at = min(start + bufsize, len(self._received))
        return self._received[start:self._received_at]

    def _sock_close(self) -> None:
        self._received, self._received_at = b"", 0  # half a packet must not outlive it
        self._deferred_acks.clear()  # packet ids of the old connection mean nothing now
        self._held_back = True  # paho re-sends what was in flight: let it look again
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Every packet already read, then up to ``READ_BURST`` more from the socket (paho
        reads one packet per ``select``); then the deferred acknowledgements, at once."""
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        packets = 0
        while self._sock is not None:
            rc = self._packet_read()
            if rc > 0:
                break
            packets += 1
            buffered = self._received_at < len(self._received)
            if not buffered and (rc == MQTTErrorCode.MQTT_ERR_AGAIN or packets >= READ_BURST):
                rc = MQTTErrorCode.MQTT_ERR_SUCCESS
                break
        if self.after_read is not None:
            self.after_read()
        if self._deferred_acks:
            mids, self._deferred_acks = self._deferred_acks, []
            self.ack_many(mids)
        if rc > 0:
            return self._loop_rc_handle(rc)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _handle_publish(self) -> MQTTErrorCode:
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        if self.deliver is None or qos == 2 or self._protocol != paho.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            end = 2 + ((packet[0] << 8) | packet[1])
            topic = packet[2:end].decode()
            mid = 0
            if qos:
                mid = (packet[end] << 8) | packet[end + 1]
                end += 2
            length = shift = 0
            while True:  # the properties' length, a variable byte integer
                byte = packet[end]
                end += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            content_type = None
            at, properties_end = end, end + length
            while at < properties_end:
                ident = packet[at]
                size = _SKIPPABLE.get(ident, -1)
                if size == -1:
                    return super()._handle_publish()  # a property we do not step over
                if size is None:
                    size = 2 + ((packet[at + 1] << 8) | packet[at + 2])
                    if ident == 0x03:
                        content_type = packet[at + 3:at + 1 + size].decode()
                at += 1 + size
            payload = bytes(packet[properties_end:])
        except (IndexError, UnicodeDecodeError):
            return super()._handle_publish()  # paho says what is wrong with it
        self.deliver(topic, payload, content_type, mid, qos, bool(command & 0x08))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # --- our own publishes --------------------------------------------------------------
    def publish(self, *args: Any, **kwargs: Any) -> paho.MQTTMessageInfo:
        info = super().publish(*args, **kwargs)
        if 0 < self._max_inflight_messages <= self._inflight_messages:
            self._held_back = True  # the window is full: the next ones wait in paho
        return info

    def _handle_pubackcomp(self, cmd: Literal["PUBACK", "PUBCOMP"]) -> MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol != paho.MQTTv5 or not 2 <= len(packet) <= 3:
            return super()._handle_pubackcomp(cmd)  # with properties: paho's way
        mid = (packet[0] << 8) | packet[1]
        code = packet[2] if len(packet) == 3 else 0
        reason = _PUBACK_REASONS.get(code)
        if reason is None:
            reason = _PUBACK_REASONS[code] = ReasonCode(PacketTypes.PUBACK, identifier=code)
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PROPERTIES)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _update_inflight(self) -> MQTTErrorCode:
        if not self._held_back:
            return MQTTErrorCode.MQTT_ERR_SUCCESS  # nothing waits: no need to look
        rc = super()._update_inflight()
        if self._inflight_messages < self._max_inflight_messages:
            self._held_back = False  # paho sent all that waited (the window has room)
        return rc

    # --- acknowledging ------------------------------------------------------------------
    def ack_many(self, mids: list[int]) -> None:
        """PUBACKs for these QoS 1 packet ids, written together (any thread)."""
        if mids:
            data = b"".join([_PUBACK.pack(_PUBACK_COMMAND, 2, mid) for mid in mids])
            self._packet_queue(_PUBACK_COMMAND, data, 0, 0)

    def publish_many_qos0(self, messages: list[tuple[str, bytes]]) -> None:
        """QoS 0 PUBLISH packets, without properties, written together (any thread): one
        queue entry and one wake-up of the loop for all, where ``publish`` builds paho's
        message and info objects, takes a packet id and wakes the loop for each."""
        if not messages:
            return
        v5 = self._protocol == paho.MQTTv5
        parts = []
        for topic, payload in messages:
            raw = topic.encode()
            # topic length, topic, (v5) an empty property block, payload
            size = 2 + len(raw) + v5 + len(payload)
            parts.append(b"\x30" + mqtt_varint(size) + _TOPIC_LENGTH.pack(len(raw)) + raw
                         + (b"\x00" if v5 else b"") + payload)
        # paho marks a written QoS 0 PUBLISH's info as published: one for the lot
        self._packet_queue(PUBLISH, b"".join(parts), 0, 0, paho.MQTTMessageInfo(0))

    def defer_ack(self, mid: int) -> None:
        """Acknowledge with the rest of this read (network thread only)."""
        self._deferred_acks.append(mid)


class MqttConsumer:
    def __init__(self, address: mqtt.BrokerAddress, worker: Worker, *, partition: int,
                 partitions: int, session_expiry_s: int = 7 * 86400,
                 receive_maximum: int = 2000,
                 subscription: Subscription = "partitioned") -> None:
        self.address = address
        self.worker = worker
        self.partition, self.partitions = partition, partitions
        self.subscribe_to, self.unsubscribe_from = subscriptions(subscription, partitions)
        # shared: the broker hands each telemetry message to one worker, which keeps it
        # whatever the device's partition; status messages stay partitioned
        self.telemetry_shared = self.subscribe_to[0] != ALL_UP
        self.client = cast(BulkClient, mqtt.new_client(
            client_id(partition, partitions), address, manual_ack=True,
            client_class=BulkClient))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message  # what the fast path leaves to paho
        self.client.deliver = self._deliver
        self.client.after_read = self._hand_over
        self._arrived: list[tuple[Envelope, object]] = []  # this read's, for the worker
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # set once the broker confirmed them
        self.client.on_subscribe = self._on_subscribe

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        self.client.connect_async(self.address.host, self.address.port, keepalive=30,
                                  clean_start=False, properties=props)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish_receipt(self, topic: str, payload: bytes) -> bool:
        """A receipt for a device (``receipts.ReceiptBook``): False when not connected, so
        the book keeps it for its next flush."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic, payload, qos=1)
        return info.rc == paho.MQTT_ERR_SUCCESS

    def publish_receipts(self, receipts: list[tuple[str, bytes]]) -> bool:
        """Receipts for devices, at QoS 0 and in one write (``receipts.ReceiptBook``):
        False when not connected, so the book keeps them for its next flush. QoS 0: a
        receipt lost on the way (the device away, the broker restarting) costs what a lost
        QoS 1 one costs, a re-send of the batch that ingest drops and receipts again (the
        agent re-sends all that is unreceipted on every new connection anyway); QoS 1
        cost the worker a tracked message and the broker a PUBACK for each."""
        if not self.connected.is_set():
            return False
        self.client.publish_many_qos0(receipts)
        return True

    def acknowledge(self, mids: list[object]) -> None:
        self.client.ack_many(mids)  # type: ignore[arg-type]  # paho's message ids

    # --- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection", extra={"reason": str(reason_code)})
            return
        # Subscriptions live in the persistent session, but it may have expired: renew.
        # (Mosquitto 2.0 does not restore shared ones after its own restart: renewed here.)
        if flags.session_present:
            client.unsubscribe(self.unsubscribe_from)
        client.subscribe([(topic, 1) for topic in self.subscribe_to])
        self.connected.set()
        log.info("connected to broker", extra={"broker": str(self.address),
                                               "session_present": flags.session_present})

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int,
                      reason_codes: list[ReasonCode], properties: object) -> None:
        if all(not code.is_failure for code in reason_codes):
            self.subscribed.set()
        else:
            log.error("broker refused a subscription",
                      extra={"reasons": [str(c) for c in reason_codes]})

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object,
                       reason_code: ReasonCode, properties: object) -> None:
        self.connected.clear()
        log.warning("disconnected from broker", extra={"reason": str(reason_code)})

    def _deliver(self, topic: str, payload: bytes, content_type: str | None, mid: int,
                 qos: int, redelivered: bool) -> None:
        if self.partitions > 1 and \
                not (self.telemetry_shared and topic.endswith("/up")) and \
                partition_of(device_of_topic(topic), self.partitions) != self.partition:
            if qos:
                self.client.defer_ack(mid)  # another worker's: it has its own copy
            return
        self._arrived.append((Envelope(topic, payload, content_type, int(time.time() * 1000),
                                       redelivered), mid))

    def _hand_over(self) -> None:
        """This read's messages to the worker, at once (network thread)."""
        if self._arrived:
            arrived, self._arrived = self._arrived, []
            self.worker.submit_many(arrived)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage
                    ) -> None:
        """What the fast path leaves to paho (a rare property, a topic not UTF-8)."""
        device = device_of_topic(msg.topic)
        if self.partitions > 1 and \
                not (self.telemetry_shared and msg.topic.endswith("/up")) and \
                partition_of(device, self.partitions) != self.partition:
            client.ack(msg.mid, msg.qos)  # another worker's: it has its own copy
            return
        message = mqtt.to_message(msg)
        # in line with the fast path's messages of this read, so each device's keep order
        self._arrived.append((Envelope(message.topic, message.payload, message.content_type,
                                       int(time.time() * 1000), message.redelivered),
                              message.mid))
