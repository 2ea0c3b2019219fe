"""Full disks, each on a small tmpfs volume of its own, filled by a ballast file and given
back by deleting it:

- the database's: ingest stops acknowledging (the broker keeps the messages), nothing is
  lost or turned into a reject, /healthz says the disk is full, and it all resumes by
  itself when space returns;
- the broker's: Mosquitto cannot save its persistence file but goes on routing, so what
  is published reaches ingest; when space returns it saves again, and a crash after that
  loses nothing;
- the edge agent's: the queue stops growing, its policy (drop_oldest, refuse_newest)
  applies to what comes, and every reading it gives up is counted.

Skipped, with the reason, only where the machine forbids mounting a tmpfs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tidefield.edge.queue import DiskQueue
from tidefield.protocol import mqtt
from tidefield.protocol.codec import encode_batch
from tidefield.protocol.messages import Batch, Reading
from tidefield.protocol.registry import load_sites
from tidefield.protocol.topics import up_topic
from tidefield.server.db.migrate import migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.embedded import MosquittoBroker, PostgresCluster

from ..support.processes import IngestService

pytestmark = pytest.mark.timeout(600)


@contextmanager
def small_volume(name: str, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB mounted under /var/tmp (the postgres user reaches it)."""
    point = Path(tempfile.mkdtemp(prefix=f"tidefield-test-{name}-", dir="/var/tmp"))
    point.chmod(0o755)
    if os.geteuid() != 0:
        point.rmdir()
        pytest.skip("mounting a small volume needs root, and these tests run as a user")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=755",
                              "tmpfs", str(point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        point.rmdir()
        pytest.skip(f"this machine forbids mounting a tmpfs: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
        shutil.rmtree(point, ignore_errors=True)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(volume: Path, leave_bytes: int = 0) -> Path:
    """A ballast file that leaves ``leave_bytes`` free (0: the volume is full)."""
    ballast = volume / "ballast"
    with ballast.open("ab") as handle:
        size = free_bytes(volume) - leave_bytes
        if size > 0:
            os.posix_fallocate(handle.fileno(), handle.tell(), size)
    return ballast


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def telemetry(site_id: str, first_seq: int, batches: int, now_ms: int,
              per_batch: int = 300) -> tuple[list[tuple[str, bytes]], int]:
    """Batches of the site's sonde, ``per_batch`` readings each, 100 ms apart, in the
    12 hours before ``now_ms`` (no two batches share a reading's time); and the
    readings in all."""
    site = next(s for s in load_sites() if s.id == site_id)
    device = next(d for d in site.devices if d.template.name == "sonde")
    metric = device.template.metrics[0]
    messages = []
    for seq in range(first_seq, first_seq + batches):
        start = now_ms - 12 * 3600_000 + seq * per_batch * 100
        readings = tuple(Reading(metric, start + k * 100, 15.0 + k * 0.001)
                         for k in range(per_batch))
        messages.append((up_topic(site.id, device.id),
                         encode_batch(Batch(site.id, device.id, seq, readings))))
    return messages, batches * per_batch


def publish(broker_url: str, messages: list[tuple[str, bytes]]) -> None:
    address = mqtt.parse_mqtt_url(broker_url)
    client = mqtt.new_client(f"disk-test-{time.monotonic_ns()}", address)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def stored(url: str) -> int:
    with psycopg.connect(url, connect_timeout=3) as conn:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]


def health(service: IngestService) -> tuple[int, str]:
    response = httpx.get(f"{service.url}/healthz", timeout=5)
    return response.status_code, response.text


# --- the database's disk ---------------------------------------------------------------

SMALL_PG = {"shared_buffers": "32MB", "max_wal_size": "64MB", "min_wal_size": "48MB",
            "wal_buffers": "1MB", "effective_cache_size": "128MB",
            "timescaledb.max_background_workers": "0"}


def test_a_full_database_disk_holds_ingest_and_it_resumes_when_space_returns(broker):
    with small_volume("pgdisk", 224) as volume:
        cluster = PostgresCluster(volume / "postgres", conf=SMALL_PG)
        cluster.start()
        service = None
        try:
            url = cluster.create_database("tidefield")
            migrate(url)
            with psycopg.connect(url) as conn:
                load_registry(conn, load_sites())
            service = IngestService(url, broker.url, volume.parent / f"{volume.name}-ingest",
                                    workers=1)
            service.wait_healthy()
            now = int(time.time() * 1000)
            first, first_count = telemetry("oc-001", 0, 5, now)
            publish(broker.url, first)
            wait_for(lambda: stored(url) == first_count, 30, "the first readings")

            ballast = fill(volume)  # the disk is full
            more, more_count = telemetry("oc-002", 0, 600, now)
            publish(broker.url, more)  # the broker takes them; ingest cannot store them

            def says_full() -> bool:
                status, text = health(service)
                return status == 503 and "database disk full: could not extend file" in text
            wait_for(says_full, 60, "/healthz to say the database disk is full")
            held = stored(url)
            assert held < first_count + more_count  # not everything got in
            assert cluster.running()  # a full disk is no crash
            metrics = httpx.get(f"{service.url}/metrics", timeout=5).text
            assert "tidefield_ingest_db_retries_total" in metrics
            time.sleep(3)
            assert stored(url) == held  # held, not written piecemeal or refused

            ballast.unlink()  # space returns
            wait_for(lambda: stored(url) == first_count + more_count, 120,
                     "every reading once space returned")
            wait_for(lambda: health(service)[0] == 200, 30, "/healthz to be healthy")
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT count(*) FROM ingest_rejects").fetchone()[0] == 0
                assert conn.execute("SELECT count(*) FROM ingest_batches").fetchone()[0] == 605
        finally:
            if service is not None:
                service.stop()
            cluster.destroy()


# --- the broker's disk -----------------------------------------------------------------

def test_a_full_broker_disk_loses_nothing_and_persistence_resumes(db_url):
    with small_volume("mqttdisk", 4) as volume:
        # save often, so the test sees saves fail and succeed within seconds
        broker = MosquittoBroker(volume / "broker", extra_conf=["autosave_interval 1"])
        broker.start()
        ingest_dir = volume.parent / f"{volume.name}-ingest"
        service = IngestService(db_url, broker.url, ingest_dir, workers=1)
        try:
            service.wait_healthy()  # its persistent session and subscriptions exist
            service.stop()
            now = int(time.time() * 1000)
            ballast = fill(volume)
            queued, queued_count = telemetry("oc-003", 0, 40, now, per_batch=200)
            publish(broker.url, queued)  # acknowledged by the broker, kept in memory
            wait_for(lambda: "No space left on device" in broker.log_file.read_text(
                errors="replace"), 30, "the broker to fail saving")
            assert broker.running()
            service = IngestService(db_url, broker.url, ingest_dir, workers=1)
            service.wait_healthy()
            wait_for(lambda: stored(db_url) == queued_count, 60,
                     "what was published while the broker's disk was full")

            # space returns: the broker saves again, so a crash now loses nothing queued
            service.stop()
            ballast.unlink()
            saved = volume / "broker" / "mosquitto.db"
            later, later_count = telemetry("oc-003", 40, 20, now, per_batch=200)
            publish(broker.url, later)
            published = time.time()
            wait_for(lambda: saved.exists() and saved.stat().st_mtime > published + 1.5, 30,
                     "a save after space returned")
            broker.proc.kill()  # a crash: only the persistence file survives it
            broker.proc.wait()
            broker.start()
            service = IngestService(db_url, broker.url, ingest_dir, workers=1)
            service.wait_healthy()
            wait_for(lambda: stored(db_url) == queued_count + later_count, 60,
                     "what the saved file held")
        finally:
            service.stop()
            broker.stop()


# --- the edge agent's disk -------------------------------------------------------------

def _readings(start_ms: int, count: int) -> list[Reading]:
    return [Reading("water_temperature", start_ms + i * 1000, 15.0 + (i % 100) * 0.01)
            for i in range(count)]


@pytest.mark.parametrize("policy", ["drop_oldest", "refuse_newest"])
def test_a_full_edge_disk_applies_the_queue_policy_and_counts_it(policy):
    floor = 12 * 2**20  # above what SQLite's write-ahead log takes before a checkpoint
    with small_volume("edgedisk", 64) as volume:
        queue = DiskQueue(volume / "queue.db", site="oc-001", when_full=policy,
                          min_free_bytes=floor)
        try:
            now = int(time.time() * 1000)
            start = now - 3600_000
            ballast = fill(volume, leave_bytes=16 * 2**20)
            put = 0
            while True:
                result = queue.put("oc-001-sonde", _readings(start + put * 1000, 2000))
                put += 2000
                if queue.disk_low:  # this put found the floor, and the policy applied
                    break
                assert (result.stored, result.dropped) == (2000, 0)  # room, until then
                assert put < 2_000_000, "the disk never got low"
            depth = queue.stats().depth
            oldest = queue.stats().oldest_time_ms
            dropped = queue.stats().dropped_full

            # the disk is low: the queue does not grow, and the policy decides
            results = [queue.put("oc-001-sonde", _readings(start + (put + i * 500) * 1000,
                                                            500)) for i in range(40)]
            stats = queue.stats()
            assert stats.depth <= depth
            if policy == "drop_oldest":  # the newest are kept, the oldest give way
                assert all(r.stored == 500 and r.evicted == 500 for r in results)
                assert stats.oldest_time_ms > oldest
            else:  # the oldest are kept, the newest are refused
                assert all(r.stored == 0 and r.refused == 500 for r in results)
                assert stats.oldest_time_ms == oldest
            assert stats.dropped_full == dropped + 40 * 500  # every one of them counted
            assert free_bytes(volume) > floor / 2  # and the disk keeps room to work

            # a disk with nothing left at all: no put raises, the queue does not grow, and
            # what gives way (refused, or evicted if SQLite still had room in its log) is
            # counted
            fill(volume)  # the ballast grows to the last byte
            last = queue.put("oc-001-sonde", _readings(now, 100))
            assert last.stored + last.refused == 100 and last.stored == last.evicted
            assert policy == "drop_oldest" or last.refused == 100
            dropped += 40 * 500 + last.dropped
            assert queue.stats().dropped_full == dropped

            # space returns: the queue grows again, and the counts are on disk
            ballast.unlink()
            grown = queue.put("oc-001-sonde", _readings(now + 100_000, 1000))
            assert (grown.stored, grown.dropped) == (1000, 0)
            assert not queue.disk_low
            counted = queue.stats().dropped_full
            queue.close()
            queue = DiskQueue(volume / "queue.db", site="oc-001", when_full=policy,
                              min_free_bytes=floor)
            assert queue.stats().dropped_full == counted == dropped
        finally:
            queue.close()


def test_the_agent_applies_its_configured_floor_and_reports_the_drops(tmp_path):
    """The config's min_free_mb reaches the queue, and what a full disk costs reaches the
    server as the gateway's agent_dropped (a floor above any disk: always full)."""
    from tidefield.edge.agent import Agent
    from tidefield.edge.config import parse_config

    config = parse_config({"site": "oc-001", "broker": {"url": "mqtt://127.0.0.1:1"},
                           "queue": {"path": str(tmp_path / "q.db"), "min_free_mb": 10**9,
                                     "when_full": "drop_oldest"}})
    agent = Agent(config)
    try:
        assert agent.queue.min_free_bytes == 10**9 * 2**20
        result = agent.queue.put("oc-001-sonde",
                                 _readings(int(time.time() * 1000) - 60_000, 150))
        assert (result.stored, result.refused) == (0, 150)  # nothing to give way: refused
        assert agent.queue.disk_low
        dropped = {r.metric: r.value for r in agent.health_readings()}["agent_dropped"]
        assert dropped == 150
    finally:
        agent.queue.close()
