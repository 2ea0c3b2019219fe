"""Fuzzing a live worker (issue 17): real PostgreSQL and Mosquitto, hostile payloads from
the codec's fuzz strategies interleaved with good messages. After each sequence every
good message is stored exactly once and every bad one is a reject; the worker lives on.
A fixed budget (a few sequences of up to 30 messages) keeps it well under a minute."""

from __future__ import annotations

import itertools
import json
import os
import time

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from psycopg import sql

from tidefield.protocol import mqtt
from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import MosquittoBroker
from tidefield.server.ingest.consumer import MqttConsumer
from tidefield.server.ingest.directory import DeviceDirectory
from tidefield.server.ingest.worker import Worker, WorkerConfig

from ..conftest import scratch_dir
from ..unit.test_codec_fuzz import hostile_json
from .test_ingest_service import _raw_publish

MIN = 60_000
SEQ = itertools.count()
PUBLISHED: set[bytes] = set()  # a reject is kept once (by fingerprint), across examples


@pytest.fixture(scope="module")
def live(pg_cluster, template_db):
    """One worker, database and broker of this module's own for every example."""
    name = f"fuzz_live_{os.getpid()}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template_db)))
    url = pg_cluster.url(name)
    broker = MosquittoBroker(scratch_dir("tidefield-test-mqtt-")).__enter__()
    directory = DeviceDirectory(url)
    consumer: MqttConsumer | None = None
    worker = Worker(url, directory, lambda mids: consumer.acknowledge(mids),  # type: ignore[union-attr]
                    WorkerConfig(max_wait_s=0.05))
    consumer = MqttConsumer(mqtt.parse_mqtt_url(broker.url), worker, partition=0,
                            partitions=1)
    worker.start()
    consumer.start()
    assert consumer.subscribed.wait(10)
    site = next(s for s in load_sites() if s.kind == "cage_farm")
    yield url, broker.url, worker, site
    consumer.stop()
    worker.stop()
    directory.close()
    broker.__exit__(None, None, None)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                     .format(sql.Identifier(name)))


def _good(site, now: int) -> tuple[str, bytes]:
    device = site.devices[0]
    seq = next(SEQ)
    return (f"tf/v1/{site.id}/{device.id}/up", json.dumps(
        {"v": 1, "site": site.id, "device": device.id, "seq": seq,
         "readings": [{"m": "water_temperature", "t": now - seq * 1000, "v": 15.5}]}).encode())


@settings(max_examples=6, deadline=None, phases=[Phase.generate],  # no shrinking: slow here
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(st.one_of(st.none(), hostile_json), min_size=1, max_size=30))
def test_good_messages_among_hostile_ones_are_stored_once_and_the_rest_rejected(
        live, sequence):
    url, broker_url, worker, site = live
    with psycopg.connect(url) as conn:
        before_batches, before_rejects = conn.execute(
            "SELECT (SELECT count(*) FROM ingest_batches), (SELECT count(*) FROM "
            "ingest_rejects)").fetchone()
    now = int(time.time() * 1000)
    # bad ones on another device's topic: whatever they claim cannot be stored as good
    bad_topic = f"tf/v1/{site.id}/{site.devices[1].id}/up"
    messages = [_good(site, now) if payload is None else (bad_topic, payload)
                for payload in sequence]
    goods = sum(payload is None for payload in sequence)
    fresh = {payload for payload in sequence if payload is not None} - PUBLISHED
    bads = len(fresh)
    PUBLISHED.update(fresh)
    _raw_publish(broker_url, messages)
    deadline = time.monotonic() + 30
    while True:
        with psycopg.connect(url) as conn:
            batches, rejects = conn.execute(
                "SELECT (SELECT count(*) FROM ingest_batches), (SELECT count(*) FROM "
                "ingest_rejects)").fetchone()
        if (batches - before_batches >= goods and rejects - before_rejects >= bads) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # a double would show now
    with psycopg.connect(url) as conn:
        batches, rejects, readings = conn.execute(
            "SELECT (SELECT count(*) FROM ingest_batches), (SELECT count(*) FROM "
            "ingest_rejects), (SELECT count(*) FROM readings)").fetchone()
        bad_stored = conn.execute("SELECT count(*) FROM ingest_batches WHERE device_id = %s",
                                  (site.devices[1].id,)).fetchone()[0]
    assert (batches - before_batches, rejects - before_rejects) == (goods, bads), (
        worker.dead, [len(p or b"") for p in sequence])
    assert readings == batches  # one reading a good message
    assert rejects - before_rejects == bads
    assert bad_stored == 0
    assert not worker.dead
