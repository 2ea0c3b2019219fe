"""The ingest service end to end: firmware-sim gateways -> Mosquitto -> `tidefield ingest`
(N processes) -> TimescaleDB, under failure."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time

import httpx
import psycopg
import pytest

from tidefield.protocol import mqtt
from tidefield.protocol.catalog import METRICS
from tidefield.protocol.codec import MSGPACK
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.sim.publisher import FleetPublisher

from ..support.processes import IngestService
from .test_ingest_store import rollups_match_raw

MIN = 60_000


def _known_batches(sites, n_per_device: int, per_batch: int, seed: int = 3):
    """A known set of readings (values random, times on each series' own grid)."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 2 * 86_400_000
    start -= start % MIN
    batches = []
    for site in sites:
        for device in site.devices:
            t = start
            for seq in range(n_per_device):
                readings = []
                for _ in range(per_batch):
                    readings += [Reading(m, t, round(rng.uniform(*METRICS[m].typical), 4))
                                 for m in device.template.metrics]
                    t += MIN
                batches.append(Batch(site.id, device.id, seq, tuple(readings)))
    rng.shuffle(batches)  # interleave devices, keeping nothing in order
    return batches


def _stored(url):
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT d.id, s.metric, (extract(epoch FROM r.time) * 1000)::bigint, r.value "
            "FROM readings r JOIN series s ON s.id = r.series_id "
            "JOIN devices d ON d.id = s.device_id").fetchall()


def _expected(batches):
    return sorted((b.device, r.metric, r.time_ms, r.value) for b in batches for r in b.readings)


def _wait_for_count(url, count, timeout=90):
    deadline = time.monotonic() + timeout
    n = -1
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(url) as conn:
                n = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        except psycopg.OperationalError:
            n = -1
        if n >= count:
            return n
        time.sleep(0.5)
    return n


@pytest.mark.slow
def test_exactly_once_through_worker_kills_and_broker_and_database_restarts(
        pg_cluster, db_url, own_broker, tmp_path):
    sites = load_sites()[:12] + load_sites()[-8:]
    batches = _known_batches(sites, n_per_device=25, per_batch=8)
    expected = _expected(batches)
    service = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=2)
    publisher = FleetPublisher(mqtt.parse_mqtt_url(own_broker.url), sites,
                               content_type=MSGPACK, window=50)
    try:
        service.wait_healthy()
        publisher.start()
        publisher.announce()
        done = threading.Event()

        def publish():
            publisher.publish(batches, rate_per_s=len(batches) / 20)  # about 20 s
            done.set()

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        started = time.monotonic()
        for at, action in ((3, "kill"), (7, "broker"), (10, "kill"), (14, "postgres")):
            time.sleep(max(0.0, started + at - time.monotonic()))
            if action == "kill":
                os.kill(random.choice(service.worker_pids()), signal.SIGKILL)
            elif action == "broker":
                own_broker.restart()
            else:
                pg_cluster.restart()
        thread.join(120)
        assert done.is_set(), "the publisher did not finish"
        assert _wait_for_count(db_url, len(expected)) == len(expected)
        time.sleep(2)  # anything doubled would show up now
        assert sorted(_stored(db_url)) == expected
        with psycopg.connect(db_url) as conn:
            rollups_match_raw(conn)
            online = conn.execute("SELECT count(*) FROM device_status "
                                  "WHERE state = 'online'").fetchone()[0]
        assert online == sum(len(s.devices) for s in sites)
    finally:
        publisher.stop(offline=False)
        service.stop()


def test_http_ingest_uses_the_same_path(db_url, tmp_path):
    site = load_sites()[0]
    device = site.devices[0]
    service = IngestService(db_url, None, tmp_path / "ingest", workers=1)
    try:
        service.wait_healthy()
        now = int(time.time() * 1000)
        body = {"v": 1, "site": site.id, "device": device.id, "seq": 1,
                "readings": [{"m": device.template.metrics[0], "t": now, "v": 21.5},
                             {"m": device.template.metrics[0], "t": now - 1000, "v": 1e9}]}
        url = f"{service.url}/ingest/{site.id}/{device.id}"
        first = httpx.post(url, content=json.dumps(body),
                           headers={"content-type": "application/json"})
        assert first.status_code == 200, first.text
        assert first.json()["readings_inserted"] == 1
        assert [r["reason"] for r in first.json()["rejected"]] == ["out_of_range"]
        again = httpx.post(url, content=json.dumps(body))
        assert again.json()["duplicate"] is True
        assert again.json()["readings_inserted"] == 0
        bad = httpx.post(url, content=b"{nope")
        assert bad.status_code == 422
        assert bad.json()["detail"]["reason"] == "malformed"
        metrics = httpx.get(f"{service.url}/metrics").text
        assert 'tidefield_ingest_rejects_total{reason="malformed"} 1.0' in metrics
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 1
            reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM ingest_rejects"))
        assert reasons == ["malformed", "out_of_range"]
    finally:
        service.stop()
