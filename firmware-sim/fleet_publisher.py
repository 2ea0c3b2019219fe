"""Publishing simulated devices' batches to the broker, as real site gateways would.

Each site is one MQTT v5 connection (its gateway, as an edge agent would be): it sends a
retained birth message for every device of the site, and its last will marks the gateway
offline if the connection dies. A load test can fold the fleet into a few connections
(``connections=``), since 250 client threads would cost more CPU than what is measured.

Batches go out at QoS 1; the publisher keeps a bounded window of unacknowledged messages
and, when the broker goes away, resends whatever was not
acknowledged once it is back (same device and seq, so the server drops any duplicate).
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
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from tidefield.protocol import codec, mqtt
from tidefield.protocol.messages import Batch, DeviceState, Status
from tidefield.protocol.registry import Site
from tidefield.protocol.topics import status_topic, up_topic

if TYPE_CHECKING:
    from .fleet import Fleet

log = logging.getLogger(__name__)


@dataclass
class PublishStats:
    messages: int = 0
    readings: int = 0
    resent: int = 0
    seconds: float = 0.0


class _Gateway:
    """One connection, for one site (or, in a load test, several)."""

    def __init__(self, sites: Sequence[Site], address: mqtt.BrokerAddress,
                 client_prefix: str, content_type: str) -> None:
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
        self.connected = threading.Event()
        self.address = address
        self.content_type = content_type
        self.props = mqtt.publish_properties(content_type)

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: ReasonCode, properties: object) -> None:
        if not reason_code.is_failure:
            self.connected.set()

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
                 connections: int | None = None) -> None:
        self.content_type = content_type
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        count = connections or len(sites)
        self.connections = [_Gateway(sites[i::count], address, client_prefix, content_type)
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

    def encode(self, batch: Batch) -> tuple[str, str, bytes, int]:
        """A batch as what goes on the wire: (site, topic, payload, readings)."""
        return (batch.site, up_topic(batch.site, batch.device),
                codec.encode_batch(batch, self.content_type), len(batch.readings))

    def publish(self, batches: Iterable[Batch], rate_per_s: float | None = None) -> PublishStats:
        """Publish every batch at QoS 1 and return once the broker has acknowledged all.

        ``rate_per_s`` paces messages; None sends as fast as acknowledgements allow.
        """
        return self.publish_encoded(map(self.encode, batches), rate_per_s)

    def publish_encoded(self, messages: Iterable[tuple[str, str, bytes, int]],
                        rate_per_s: float | None = None) -> PublishStats:
        """Like publish, for messages encoded beforehand (load tests encode ahead so
        that the publisher's own CPU does not compete with what is measured)."""
        started = time.perf_counter()
        pending: list[Pending] = []
        for n, (site, topic, payload, readings) in enumerate(messages):
            if rate_per_s:
                delay = started + n / rate_per_s - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            gateway = self.gateways[site]
            pending.append((gateway, topic, payload, gateway.publish(topic, payload)))
            self.stats.messages += 1
            self.stats.readings += readings
            if len(pending) >= self.window:
                pending = self._settle(pending, keep=self.window // 2)
        self._settle(pending, keep=0)
        self.stats.seconds += time.perf_counter() - started
        return self.stats

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
