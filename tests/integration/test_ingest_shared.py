"""Shared subscriptions (``TIDEFIELD_INGEST_SUBSCRIPTION=shared``): Mosquitto hands each
telemetry message to one worker, round robin per message, so one device's batches are
stored by several workers at once. What must still hold: every batch stored once (the
(device, seq) claim in the database, not the partition, decides), every batch receipted
(each worker receipts what it stored), and after a worker's death and a broker restart,
which forgets shared subscriptions in Mosquitto 2.0, nothing lost or doubled for a
publisher that re-sends what no receipt named (as the edge agent does)."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import psycopg
import pytest

from tidefield.protocol import codec, mqtt
from tidefield.protocol.codec import MSGPACK
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import ALL_RECEIPTS, parse_topic
from tidefield.server.ingest.consumer import MqttConsumer, Subscription
from tidefield.server.ingest.directory import DeviceDirectory
from tidefield.server.ingest.receipts import ReceiptBook
from tidefield.server.ingest.worker import Worker, WorkerConfig
from tidefield.sim.fleet_publisher import FleetPublisher

from ..support.processes import IngestService
from .test_ingest_service import _expected, _known_batches, _raw_publish, _stored, _wait_for_count
from .test_ingest_store import rollups_match_raw

MIN = 60_000
BATCHES = 200


class Receipts:
    """Every seq the receipts on the broker name, per device."""

    def __init__(self, broker_url: str) -> None:
        self.stored: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        address = mqtt.parse_mqtt_url(broker_url)
        self.client = mqtt.new_client("test-receipt-listener", address)
        self.client.on_message = self._on_message
        self.client.connect(address.host, address.port)
        self.client.subscribe(ALL_RECEIPTS, qos=1)
        self.client.loop_start()

    def _on_message(self, client: object, userdata: object, message: object) -> None:
        received = mqtt.to_message(message)  # type: ignore[arg-type]
        receipt = codec.decode_receipt(received.payload, received.content_type,
                                       topic=parse_topic(received.topic))
        with self._lock:
            seqs = self.stored.setdefault(receipt.device, set())
            for first, last in receipt.stored:
                seqs.update(range(first, last + 1))

    def of(self, device: str) -> set[int]:
        with self._lock:
            return set(self.stored.get(device, ()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _start(db_url: str, broker_url: str, partition: int, subscription: Subscription
           ) -> tuple[MqttConsumer, Worker, DeviceDirectory]:
    """One ingest process's parts, in this process: partition ``partition`` of 2."""
    directory = DeviceDirectory(db_url)
    consumer: MqttConsumer | None = None
    book = ReceiptBook(publish_many=lambda receipts: consumer.publish_receipts(receipts),  # type: ignore[union-attr]
                       interval_s=0.1)
    worker = Worker(db_url, directory, lambda mids: consumer.acknowledge(mids),  # type: ignore[union-attr]
                    WorkerConfig(max_wait_s=0.05), partition=partition, receipts=book)
    consumer = MqttConsumer(mqtt.parse_mqtt_url(broker_url), worker, partition=partition,
                            partitions=2, subscription=subscription)
    worker.start()
    consumer.start()
    return consumer, worker, directory


@pytest.mark.parametrize("subscription", ["shared", "partitioned"])
def test_one_devices_batches_go_to_both_workers_and_are_stored_and_receipted_once(
        db_url, own_broker, subscription: Subscription):
    site = next(s for s in load_sites() if s.kind == "cage_farm")
    device = site.devices[0]
    now = int(time.time() * 1000)
    receipts = Receipts(own_broker.url)
    pairs = [_start(db_url, own_broker.url, partition, subscription)
             for partition in range(2)]
    books = [worker.receipts for _, worker, _ in pairs]
    try:
        for consumer, _, _ in pairs:
            assert consumer.subscribed.wait(10)
        messages = [(f"tf/v1/{site.id}/{device.id}/up", json.dumps(
            {"v": 1, "site": site.id, "device": device.id, "seq": seq,
             "readings": [{"m": "water_temperature", "t": now - seq * MIN, "v": 15.5}]}
        ).encode()) for seq in range(BATCHES)]
        _raw_publish(own_broker.url, messages)
        assert _wait_for_count(db_url, BATCHES, timeout=30) == BATCHES
        deadline = time.monotonic() + 10
        while receipts.of(device.id) != set(range(BATCHES)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert receipts.of(device.id) == set(range(BATCHES))
        time.sleep(0.5)  # anything doubled would show up now
        with psycopg.connect(db_url) as conn:
            seqs = [r[0] for r in conn.execute(
                "SELECT seq FROM ingest_batches WHERE device_id = %s", (device.id,))]
            assert sorted(seqs) == list(range(BATCHES))
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == BATCHES
            assert conn.execute("SELECT batches FROM device_status WHERE device_id = %s",
                                (device.id,)).fetchone()[0] == BATCHES
            rollups_match_raw(conn)
        receipting = [book is not None and book.sent > 0 for book in books]
        if subscription == "shared":  # the broker's round robin, whatever the partition
            assert receipting == [True, True]
        else:  # the device's own partition's worker alone
            assert sorted(receipting) == [False, True]
    finally:
        for consumer, worker, directory in pairs:
            consumer.stop()
            worker.stop()
            directory.close()
        receipts.close()


@pytest.mark.slow
def test_shared_exactly_once_through_a_worker_kill_and_a_broker_restart(
        db_url, own_broker, tmp_path):
    sites = load_sites()[:10]
    batches = _known_batches(sites, n_per_device=20, per_batch=4)
    expected = _expected(batches)
    service = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=2,
                            extra_env={"TIDEFIELD_INGEST_SUBSCRIPTION": "shared"})
    publisher = FleetPublisher(mqtt.parse_mqtt_url(own_broker.url), sites,
                               content_type=MSGPACK, window=50, receipts=True,
                               receipt_timeout_s=2.0)
    try:
        service.wait_healthy()
        publisher.start()
        publisher.announce()
        done = threading.Event()

        def publish() -> None:
            publisher.publish(batches, rate_per_s=len(batches) / 12)
            done.set()

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        started = time.monotonic()
        for at, action in ((3, "kill"), (6, "broker")):
            time.sleep(max(0.0, started + at - time.monotonic()))
            if action == "kill":
                os.kill(random.choice(service.worker_pids()), signal.SIGKILL)
            else:
                own_broker.restart()
        thread.join(120)
        assert done.is_set(), "the publisher did not finish"
        # what the restarted broker dropped (no shared subscription yet) comes again
        assert publisher.drain(120), f"{publisher.unreceipted} batches never receipted"
        assert _wait_for_count(db_url, len(expected)) == len(expected)
        time.sleep(2)  # anything doubled would show up now
        assert sorted(_stored(db_url)) == expected
        with psycopg.connect(db_url) as conn:
            rollups_match_raw(conn)
            claimed = conn.execute("SELECT count(*), count(DISTINCT (device_id, seq)) "
                                   "FROM ingest_batches").fetchone()
        assert claimed == (len(batches), len(batches))
    finally:
        publisher.stop(offline=False)
        service.stop()
