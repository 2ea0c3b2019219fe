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

``manual_ack``: a message is acknowledged only when the transaction holding its rows (or
its reject) has committed; then the device gets a receipt (``receipts``) on its own
``down/receipt`` topic, sent through this module's client. Receive Maximum bounds the
unacknowledged messages in flight, which is our back-pressure when the database is slow.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tidefield.protocol import mqtt
from tidefield.protocol.topics import ALL_STATUS, ALL_UP

from .pipeline import Envelope, device_of_topic
from .worker import Worker

if TYPE_CHECKING:
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

SUBSCRIPTIONS = (ALL_UP, ALL_STATUS)


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


class MqttConsumer:
    def __init__(self, address: mqtt.BrokerAddress, worker: Worker, *, partition: int,
                 partitions: int, session_expiry_s: int = 7 * 86400,
                 receive_maximum: int = 2000) -> None:
        self.address = address
        self.worker = worker
        self.partition, self.partitions = partition, partitions
        self.client = mqtt.new_client(client_id(partition, partitions), address,
                                      manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
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

    def acknowledge(self, mids: list[object]) -> None:
        for mid in mids:
            self.client.ack(mid, 1)  # type: ignore[arg-type]  # paho's message ids

    # --- paho callbacks (network thread) ------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: object, flags: paho.ConnectFlags,
                    reason_code: ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection", extra={"reason": str(reason_code)})
            return
        # Subscriptions live in the persistent session, but it may have expired: renew.
        client.subscribe([(topic, 1) for topic in SUBSCRIPTIONS])
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

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage
                    ) -> None:
        device = device_of_topic(msg.topic)
        if self.partitions > 1 and partition_of(device, self.partitions) != self.partition:
            client.ack(msg.mid, msg.qos)  # another worker's: it has its own copy
            return
        message = mqtt.to_message(msg)
        self.worker.submit(Envelope(message.topic, message.payload, message.content_type,
                                    int(time.time() * 1000), message.redelivered),
                           message.mid)
