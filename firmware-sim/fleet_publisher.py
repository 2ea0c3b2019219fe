"""Publishing simulated devices' batches to the broker, as real site gateways would.

Each site is one MQTT v5 connection (its gateway, as an edge agent would be): it sends a
retained birth message for every device of the site, and its last will marks the gateway
offline if the connection dies. A load test can fold the fleet into a few connections
(``connections=``), since 250 client threads would cost more CPU than what is measured.

Batches go out at QoS 1; the publisher keeps a bounded window of unacknowledged messages
and, when the broker goes away, resends whatever was not
acknowledged once it is back (same device and seq, so the server drops any duplicate).

With ``receipts`` (what the fleet command does), a PUBACK is not the end of a batch, as
for the edge agent: each gateway subscribes to its sites' receipts, and a batch that no
receipt has named ``receipt_timeout_s`` after it was sent goes again (the wait doubling
up to ``RECEIPT_TIMEOUT_MAX_S``), so a broker killed with its backlog in memory costs the
evaluation and the gap view nothing. The simulator keeps them in memory, at most
``max_unreceipted`` (then publishing waits): a simulator that dies loses them, and the
gap view shows it, as it should.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from tidefield.protocol import codec, mqtt
from tidefield.protocol.errors import ProtocolError
from tidefield.protocol.messages import Batch, DeviceState, Status
from tidefield.protocol.registry import Site
from tidefield.protocol.topics import (
    PREFIX,
    RECEIPT,
    parse_topic,
    status_topic,
    up_topic,
)

if TYPE_CHECKING:
    from .fleet import Fleet

log = logging.getLogger(__name__)

RECEIPT_TIMEOUT_MAX_S = 600.0
RESEND_CHECK_S = 0.5


class Encoded(NamedTuple):
    """A batch as it goes on the wire."""

    site: str
    topic: str
    payload: bytes
    readings: int
    device: str
    seq: int


@dataclass
class PublishStats:
    messages: int = 0
    readings: int = 0
    resent: int = 0
    seconds: float = 0.0


class _Gateway:
    """One connection, for one site (or, in a load test, several)."""

    def __init__(self, sites: Sequence[Site], address: mqtt.BrokerAddress,
                 client_prefix: str, content_type: str,
                 on_receipt: Callable[[mqtt.Message], None] | None = None) -> None:
        self.sites = list(sites)
        site = self.sites[0]
        self.gateway_device = next((d.id for d in site.devices if d.template.name == "gw"),
                                   site.devices[-1].id)
        will = Status(site.id, self.gateway_device, DeviceState.OFFLINE, 0)
        self.client = mqtt.new_client(
            f"{client_prefix}-{site.id}", address,
            will=(status_topic(site.id, self.gateway_device),
                  codec.encode_status(will, content_type), True),
            will_content_type=content_type)
        self.client.reconnect_delay_set(0.2, 2)  # type: ignore[arg-type]  # floats work
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.on_receipt = on_receipt
        if on_receipt is not None:
            self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.address = address
        self.content_type = content_type
        self.props = mqtt.publish_properties(content_type)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: ReasonCode, properties: object) -> None:
        if not reason_code.is_failure:
            if self.on_receipt is not None:  # (a clean session: subscribe every time)
                client.subscribe([(f"{PREFIX}/{site.id}/+/down/{RECEIPT}", 1)
                                  for site in self.sites])
            self.connected.set()

    def _on_message(self, client: paho.Client, userdata: object,
                    message: paho.MQTTMessage) -> None:
        if self.on_receipt is not None:
            self.on_receipt(mqtt.to_message(message))

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object,
                       reason_code: ReasonCode, properties: object) -> None:
        self.connected.clear()

    def start(self) -> None:
        mqtt.connect(self.client, self.address, clean_start=True)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> paho.MQTTMessageInfo:
        self.connected.wait()
        return self.client.publish(topic, payload, qos=1, retain=retain,
                                   properties=self.props)


# a message handed to paho and not yet acknowledged: its gateway, topic, payload, ticket
Pending = tuple[_Gateway, str, bytes, paho.MQTTMessageInfo]


class FleetPublisher:
    def __init__(self, address: mqtt.BrokerAddress, sites: Sequence[Site], *,
                 content_type: str = codec.JSON, client_prefix: str = "tf-sim",
                 window: int = 500, ack_timeout_s: float = 10.0,
                 connections: int | None = None, receipts: bool = False,
                 receipt_timeout_s: float = 30.0, max_unreceipted: int = 20_000) -> None:
        self.content_type = content_type
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.receipts = receipts
        self.receipt_timeout_s = receipt_timeout_s
        self.max_unreceipted = max_unreceipted
        # sent and not receipted: (device, seq) -> [gateway, topic, payload, due, sends]
        self._unreceipted: dict[tuple[str, int], list] = {}
        self._receipt_lock = threading.Lock()  # paho's threads note receipts
        self._resend_check_at = 0.0
        count = connections or len(sites)
        self.connections = [_Gateway(sites[i::count], address, client_prefix, content_type,
                                     self._on_receipt if receipts else None)
                            for i in range(min(count, len(sites)))]
        self.gateways = {site.id: g for g in self.connections for site in g.sites}
        self.stats = PublishStats()

    def start(self, timeout: float = 30) -> None:
        for gateway in self.connections:
            gateway.start()
        deadline = time.monotonic() + timeout
        for gateway in self.connections:
            if not gateway.connected.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"gateway of {gateway.sites[0].id} could not connect")

    def announce(self, interval_s: dict[str, int] | None = None) -> None:
        """Birth messages (retained) for every device of every site."""
        now = int(time.time() * 1000)
        for site in (site for g in self.connections for site in g.sites):
            for device in site.devices:
                status = Status(site.id, device.id, DeviceState.ONLINE, now,
                                device.template.interval_s)
                self.gateways[site.id].publish(status_topic(site.id, device.id),
                                               codec.encode_status(status, self.content_type),
                                               retain=True)

    def stop(self, offline: bool = True) -> None:
        if offline:
            now = int(time.time() * 1000)
            for site in (site for g in self.connections for site in g.sites):
                for device in site.devices:
                    status = Status(site.id, device.id, DeviceState.OFFLINE, now)
                    info = self.gateways[site.id].publish(
                        status_topic(site.id, device.id),
                        codec.encode_status(status, self.content_type), retain=True)
                    info.wait_for_publish(2)
        for gateway in self.connections:
            gateway.stop()

    def encode(self, batch: Batch) -> Encoded:
        """A batch as what goes on the wire."""
        return Encoded(batch.site, up_topic(batch.site, batch.device),
                       codec.encode_batch(batch, self.content_type), len(batch.readings),
                       batch.device, batch.seq)

    def publish(self, batches: Iterable[Batch], rate_per_s: float | None = None) -> PublishStats:
        """Publish every batch at QoS 1 and return once the broker has acknowledged all.

        ``rate_per_s`` paces messages; None sends as fast as acknowledgements allow.
        """
        return self.publish_encoded(map(self.encode, batches), rate_per_s)

    def publish_encoded(self, messages: Iterable[Encoded],
                        rate_per_s: float | None = None) -> PublishStats:
        """Like publish, for messages encoded beforehand (load tests encode ahead so
        that the publisher's own CPU does not compete with what is measured)."""
        started = time.perf_counter()
        pending: list[Pending] = []
        for n, (site, topic, payload, readings, device, seq) in enumerate(messages):
            if rate_per_s:
                delay = started + n / rate_per_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            gateway = self.gateways[site]
            if self.receipts:
                pending += self._resend_overdue()
                while self.unreceipted >= self.max_unreceipted:
                    time.sleep(0.05)
                    pending += self._resend_overdue()
                with self._receipt_lock:
                    self._unreceipted[(device, seq)] = [
                        gateway, topic, payload,
                        time.monotonic() + self.receipt_timeout_s, 1]
            pending.append((gateway, topic, payload, gateway.publish(topic, payload)))
            self.stats.messages += 1
            self.stats.readings += readings
            if len(pending) >= self.window:
                pending = self._settle(pending, keep=self.window // 2)
        self._settle(pending, keep=0)
        self.stats.seconds += time.perf_counter() - started
        return self.stats

    @property
    def unreceipted(self) -> int:
        with self._receipt_lock:
            return len(self._unreceipted)

    def drain(self, timeout_s: float) -> bool:
        """Wait (re-sending what is overdue) until every batch has its receipt; whether
        they all did within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.unreceipted and time.monotonic() < deadline:
            self._resend_overdue()  # (the receipt is what counts, not their PUBACKs)
            time.sleep(0.05)
        return not self.unreceipted

    def _on_receipt(self, message: mqtt.Message) -> None:
        """A gateway's paho thread: batches the receipt names are done."""
        try:
            receipt = codec.decode_receipt(message.payload, message.content_type,
                                           topic=parse_topic(message.topic))
        except ProtocolError as exc:  # the batches go again after their timeout
            log.warning("ignoring a receipt on %s: %s", message.topic, exc)
            return
        with self._receipt_lock:
            for first, last in receipt.stored:
                if last - first < len(self._unreceipted):
                    for seq in range(first, last + 1):
                        self._unreceipted.pop((receipt.device, seq), None)
                else:
                    for key in [k for k in self._unreceipted
                                if k[0] == receipt.device and first <= k[1] <= last]:
                        del self._unreceipted[key]

    def _resend_overdue(self) -> list[Pending]:
        """Send again what no receipt named in time; the new tickets."""
        now = time.monotonic()
        if now < self._resend_check_at:
            return []
        self._resend_check_at = now + RESEND_CHECK_S
        with self._receipt_lock:
            due = [entry for entry in self._unreceipted.values() if entry[3] <= now]
            for entry in due:
                entry[4] += 1
                # doubling; no jitter: the simulator's gateways share one clock anyway
                entry[3] = now + min(RECEIPT_TIMEOUT_MAX_S,
                                     self.receipt_timeout_s * 2 ** min(entry[4] - 1, 16))
        if due:
            log.info("no receipt for %d batches in time; sending them again", len(due))
            self.stats.resent += len(due)
        return [(gateway, topic, payload, gateway.publish(topic, payload))
                for gateway, topic, payload, _, _ in due]

    def _settle(self, pending: list[Pending], keep: int) -> list[Pending]:
        """Wait for acknowledgements until at most ``keep`` are outstanding; resend what a
        lost connection dropped (paho forgets in-flight messages of a clean session)."""
        while len(pending) > keep:
            gateway, topic, payload, info = pending[0]
            try:
                info.wait_for_publish(self.ack_timeout_s)
                ok = info.is_published()
            except RuntimeError:  # the message was dropped with the connection
                ok = False
            if ok:
                pending.pop(0)
                continue
            log.info("resending an unacknowledged message", extra={"topic": topic})
            self.stats.resent += 1
            pending[0] = (gateway, topic, payload, gateway.publish(topic, payload))
        return pending


class SequenceFile:
    """Per-device sequence numbers that survive restarts of the simulator.

    A real device persists its sequence: were it to start again at 0, the server would
    take its new batches for re-deliveries of old ones. Numbers are reserved (saved)
    before the batches that use them are published, so a crash can skip numbers (a
    visible gap) but never reuse one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._next: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}

    def next(self, device_id: str) -> int:
        seq = self._next.get(device_id, 0)
        self._next[device_id] = seq + 1
        return seq

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._next))
        os.replace(tmp, self.path)


def run_fleet(fleet: Fleet, publisher: FleetPublisher, sequences: SequenceFile, *,
              stop: threading.Event, backfill_ms: int = 0, window_ms: int = 6 * 3_600_000,
              tick_s: float = 10.0, max_readings: int = 500,
              progress: Callable[[int, int], None] | None = None) -> None:
    """Publish the fleet's history (``backfill_ms`` back from now), then live data every
    ``tick_s`` until ``stop``. ``progress(done_ms, total_ms)`` follows the backfill."""
    now = int(time.time() * 1000)
    cursor = now - backfill_ms
    while cursor < now and not stop.is_set():  # history, as fast as the broker takes it
        end = min(cursor + window_ms, now)
        batches = list(fleet.batches(cursor, end, sequences.next, max_readings=max_readings))
        sequences.save()
        publisher.publish(batches)
        cursor = end
        if progress is not None:
            progress(cursor - (now - backfill_ms), backfill_ms)
    while not stop.wait(max(0.0, tick_s - (time.time() * 1000 - cursor) / 1000)):
        end = int(time.time() * 1000)
        batches = list(fleet.batches(cursor, end, sequences.next, max_readings=max_readings))
        sequences.save()
        publisher.publish(batches)
        cursor = end
