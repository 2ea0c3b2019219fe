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
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.sim.fleet_publisher import FleetPublisher

from ..support.processes import IngestService
from .test_ingest_store import rollups_match_raw, snapshot

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
        assert httpx.post(url, content=json.dumps(body)).status_code == 401
        with psycopg.connect(db_url) as conn:
            key = {"X-API-Key": create_key(conn, "gateway", [Scope.INGEST], [site.id])}
            reader = {"X-API-Key": create_key(conn, "reader", [Scope.READ])}
        assert httpx.post(url, content=json.dumps(body), headers=reader).status_code == 403
        other = load_sites()[1]
        assert httpx.post(f"{service.url}/ingest/{other.id}/{other.devices[0].id}",
                          content=json.dumps(body), headers=key).status_code == 403
        first = httpx.post(url, content=json.dumps(body),
                           headers={"content-type": "application/json", **key})
        assert first.status_code == 200, first.text
        assert first.json()["readings_inserted"] == 1
        assert [r["reason"] for r in first.json()["rejected"]] == ["out_of_range"]
        again = httpx.post(url, content=json.dumps(body), headers=key)
        assert again.json()["duplicate"] is True
        assert again.json()["readings_inserted"] == 0
        bad = httpx.post(url, content=b"{nope", headers=key)
        assert bad.status_code == 422
        assert bad.json()["error"]["message"].startswith("malformed: payload is not valid")
        metrics = httpx.get(f"{service.url}/metrics").text
        assert 'tidefield_ingest_rejects_total{reason="malformed"} 1.0' in metrics
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 1
            reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM ingest_rejects"))
        assert reasons == ["malformed", "out_of_range"]
    finally:
        service.stop()


def _raw_publish(broker_url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish raw payloads at QoS 1 and wait for every PUBACK."""
    address = mqtt.parse_mqtt_url(broker_url)
    client = mqtt.new_client("raw-test-publisher", address)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_every_kind_of_bad_message_is_kept_and_the_good_ones_stored(db_url, broker, tmp_path):
    site = next(s for s in load_sites() if s.kind == "cage_farm")
    device = site.devices[0]
    other = site.devices[1]
    now = int(time.time() * 1000)
    topic = f"tf/v1/{site.id}/{device.id}/up"

    def body(seq, readings, **extra):
        return json.dumps({"v": 1, "site": site.id, "device": device.id, "seq": seq,
                           "readings": readings, **extra}).encode()

    def good(seq):
        return topic, body(seq, [{"m": "water_temperature", "t": now - seq * MIN, "v": 15.5}])

    bad = {
        "malformed": (topic, b'{"v": 1, "site": '),
        "wrong types": (topic, body(101, [{"m": "salinity", "t": now, "v": "thirty"}])),
        "non_finite": (topic, body(102, [{"m": "salinity", "t": now, "v": float("inf")}])),
        "unknown_metric": (topic, body(103, [{"m": "moonlight", "t": now, "v": 1}])),
        "out_of_range": (topic, body(104, [{"m": "salinity", "t": now, "v": 99.0}])),
        "time_in_future": (topic, body(105, [{"m": "salinity", "t": now + 86_400_000,
                                              "v": 30.0}])),
        "time_too_old": (topic, body(106, [{"m": "salinity", "t": 946_684_800_000,
                                            "v": 30.0}])),
        "oversize": (topic, body(107, [{"m": "salinity", "t": now, "v": 30.0}] * 20_000)),
        "identity_mismatch": (f"tf/v1/{site.id}/{other.id}/up",
                              body(108, [{"m": "salinity", "t": now, "v": 30.0}])),
    }
    expected_reason = {"wrong types": "malformed"}
    messages = []
    for n, item in enumerate(bad.values()):
        messages += [good(n), item]
    messages.append(good(len(bad)))
    service = IngestService(db_url, broker.url, tmp_path / "ingest", workers=1)
    try:
        service.wait_healthy()
        _raw_publish(broker.url, messages)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with psycopg.connect(db_url) as conn:
                rejects = conn.execute("SELECT reason, topic, detail FROM ingest_rejects "
                                       "ORDER BY id").fetchall()
                stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            if len(rejects) >= len(bad) and stored >= len(bad) + 1:
                break
            time.sleep(0.3)
    finally:
        service.stop()
    assert stored == len(bad) + 1  # every good message around the bad ones
    assert sorted(r for r, _, _ in rejects) == sorted(
        expected_reason.get(name, name) for name in bad)
    for reason, reject_topic, detail in rejects:
        assert detail, reason
        assert reject_topic.startswith(f"tf/v1/{site.id}/")


def test_republishing_every_batch_changes_nothing(db_url, broker, tmp_path):
    sites = load_sites()[100:103]
    batches = _known_batches(sites, n_per_device=4, per_batch=5, seed=11)
    service = IngestService(db_url, broker.url, tmp_path / "ingest", workers=2)
    publisher = FleetPublisher(mqtt.parse_mqtt_url(broker.url), sites, client_prefix="dup")
    try:
        service.wait_healthy()
        publisher.start()
        publisher.publish(batches)
        expected = _expected(batches)
        assert _wait_for_count(db_url, len(expected), timeout=30) == len(expected)
        with psycopg.connect(db_url) as conn:
            before = snapshot(conn)
        publisher.publish(list(reversed(batches)))
        time.sleep(3)
        with psycopg.connect(db_url) as conn:
            assert snapshot(conn) == before
            rollups_match_raw(conn)
    finally:
        publisher.stop(offline=False)
        service.stop()
