"""Poison quarantine (issue 17): a message whose processing kills the worker is delivered
again after each restart; its starts are counted in the database, from the second
redelivery on it is started alone, and past the limit of starts alone it is kept as a
reject (reason poison) and acknowledged. Its neighbours
are stored exactly once, none of them quarantined."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tidefield.protocol import mqtt
from tidefield.protocol.registry import load_sites
from tidefield.server.ingest.consumer import MqttConsumer
from tidefield.server.ingest.directory import DeviceDirectory, DeviceEntry
from tidefield.server.ingest.worker import Worker, WorkerConfig

from .test_ingest_service import _raw_publish

MIN = 60_000
ATTEMPTS = 2


class Crash(BaseException):
    """What no ``except Exception`` catches: it kills the thread, as a crash would."""


class CrashingDirectory(DeviceDirectory):
    """The real directory, except that looking up one device kills the caller."""

    def __init__(self, url: str, poison_device: str) -> None:
        super().__init__(url)
        self.poison_device = poison_device

    def device(self, device_id: str, site_id: str) -> DeviceEntry | None:
        if device_id == self.poison_device:
            raise Crash(f"looking up {device_id}")
        return super().device(device_id, site_id)


def _run(db_url: str, broker_url: str, poison_device: str, seconds: float) -> Worker:
    """One life of an ingest process: a worker and its consumer on the persistent
    session, for ``seconds`` or until a loop dies."""
    directory = CrashingDirectory(db_url, poison_device)
    consumer: MqttConsumer | None = None
    worker = Worker(db_url, directory, lambda mids: consumer.acknowledge(mids),  # type: ignore[union-attr]
                    WorkerConfig(max_wait_s=0.3, poison_attempts=ATTEMPTS))
    consumer = MqttConsumer(mqtt.parse_mqtt_url(broker_url), worker, partition=0,
                            partitions=1)
    worker.start()
    consumer.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not worker.dead:
        time.sleep(0.1)
    time.sleep(0.5)  # what was written is acknowledged
    consumer.stop()
    worker.stop()
    directory.close()
    return worker


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_message_that_kills_the_worker_is_quarantined_after_bounded_restarts(
        db_url, own_broker):
    site = next(s for s in load_sites() if s.kind == "cage_farm")
    good_device, poison_device = site.devices[0], site.devices[1]
    now = int(time.time() * 1000)

    def message(device, seq):
        return (f"tf/v1/{site.id}/{device.id}/up", json.dumps(
            {"v": 1, "site": site.id, "device": device.id, "seq": seq,
             "readings": [{"m": "water_temperature", "t": now - seq * MIN, "v": 15.5}]}
        ).encode())

    # the session exists before anything is published, so the broker queues for it
    _run(db_url, own_broker.url, poison_device.id, 1.0)
    messages = [message(good_device, n) for n in range(5)]
    messages.append(message(poison_device, 1))
    messages += [message(good_device, n) for n in range(5, 10)]
    _raw_publish(own_broker.url, messages)

    lives = []
    for _ in range(ATTEMPTS + 4):
        worker = _run(db_url, own_broker.url, poison_device.id, 8.0)
        lives.append(dict(worker.dead))
        with psycopg.connect(db_url) as conn:
            rejects = conn.execute("SELECT reason, detail, payload FROM ingest_rejects"
                                   ).fetchall()
            alone = conn.execute("SELECT alone FROM ingest_attempts WHERE topic LIKE %s",
                                 (f"%/{poison_device.id}/up",)).fetchall()
        if rejects:
            break
        # its starts alone, counted in the database across lives: none in the first
        # two (in a window: the first delivery, then the first redelivery)
        assert alone in ([], [(max(0, len(lives) - 2),)]), (lives, alone)
    # dies in a window twice, then ATTEMPTS times alone; the next life sets it aside
    assert [bool(dead) for dead in lives] == [True] * (ATTEMPTS + 2) + [False], lives
    assert all("Crash: looking up" in next(iter(dead.values())) for dead in lives[:-1])
    [(reason, detail, payload)] = rejects
    assert reason == "poison"
    assert f"started on this message {ATTEMPTS} times" in detail
    assert bytes(payload) == messages[5][1]
    with psycopg.connect(db_url) as conn:
        stored = sorted(conn.execute(
            "SELECT b.seq FROM ingest_batches b WHERE device_id = %s",
            (good_device.id,)).fetchall())
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        left = conn.execute("SELECT count(*) FROM ingest_attempts").fetchone()[0]
    assert stored == [(n,) for n in range(10)]  # every neighbour, once
    assert readings == 10
    assert left == 0  # nothing counted against the messages that were committed
