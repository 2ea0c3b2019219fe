"""Receipts end to end: firmware-sim Modbus devices -> edge agent -> real Mosquitto ->
`tidefield ingest` -> TimescaleDB, through `kill -9` of the broker while it holds a backlog
for ingest, of the database in the middle of a burst, and of ingest.

Mosquitto writes its persistence file every ``autosave_interval`` seconds and at a clean
stop, so a broker killed with SIGKILL forgets what it acknowledged since: only the
agent's keeping every batch until ingest's receipt makes that harmless. The same test
with receipts off loses readings, which shows that it can fail."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from tidefield.edge.agent import Agent
from tidefield.protocol import mqtt
from tidefield.protocol.registry import load_sites
from tidefield.server.embedded import MosquittoBroker
from tidefield.sim.fleet_publisher import FleetPublisher

from ..conftest import scratch_dir
from ..support.processes import IngestService
from .test_edge_agent import Running, edge_config, short_retries
from .test_edge_modbus import Sim, sim
from .test_ingest_service import _expected, _known_batches
from .test_ingest_store import rollups_match_raw

SITE = "ag-001"
DEVICES = ["ag-001-soil", "ag-001-wx"]  # registered in the test database, like the gateway


@pytest.fixture
def sim_modbus() -> Sim:
    return sim()


@pytest.fixture
def running(monkeypatch):
    short_retries(monkeypatch)
    started = Running()
    yield started
    started.stop_all()


def stored(url: str) -> list[tuple[str, str, int, float]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT d.id, s.metric, (extract(epoch FROM r.time) * 1000)::bigint, r.value "
            "FROM readings r JOIN series s ON s.id = r.series_id "
            "JOIN devices d ON d.id = s.device_id").fetchall()


def batches_stored(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT device_id, seq FROM ingest_batches").fetchall()


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def spied_agent(config) -> tuple[Agent, list[tuple[str, str, int, float]]]:
    """An agent and the list of every reading its drivers queued (after the commit)."""
    agent = Agent(config)
    produced: list[tuple[str, str, int, float]] = []
    put = agent.queue.put

    def spy(device, readings):
        result = put(device, readings)
        produced.extend((device, r.metric, r.time_ms, r.value) for r in readings)
        return result

    agent.queue.put = spy
    return agent, produced


@pytest.fixture
def forgetful_broker():
    """A broker that saves its persistence file only at a clean stop (an hour between
    autosaves): a SIGKILL then loses everything it acknowledged, every time, rather than
    what came since its last save, which would make what is tested depend on timing."""
    broker = MosquittoBroker(scratch_dir("tidefield-test-mqtt-"),
                             extra_conf=["autosave_interval 3600"])
    broker.start()
    yield broker
    broker.stop()


def kill_9(broker) -> None:
    broker.proc.send_signal(signal.SIGKILL)
    broker.proc.wait(10)


@pytest.mark.parametrize("receipts", [True, False], ids=["receipts", "puback-only"])
def test_a_broker_killed_with_a_backlog_loses_nothing(db_url, forgetful_broker,
                                                      sim_modbus: Sim, tmp_path, running,
                                                      receipts):
    own_broker = forgetful_broker
    ingest = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
    ingest.wait_healthy()
    ingest.stop()  # held back: its persistent session makes the broker keep a backlog
    config = edge_config(tmp_path, own_broker.url, SITE,
                         [sim_modbus.driver(d, interval_s=0.1) for d in DEVICES],
                         publish={"receipts": receipts, "receipt_timeout_s": 1.0,
                                  "batch_max_readings": 20},
                         health={"interval_s": 0.5})
    agent, produced = spied_agent(config)
    running(agent)
    publisher = agent.publisher
    if receipts:
        wait(lambda: publisher.unreceipted >= 10, 20, "batches acknowledged by the broker")
        # every batch the broker acknowledged is still on the agent's disk
        assert agent.queue.stats().depth >= 10
    else:
        wait(lambda: len(produced) >= 200, 20, "readings produced")
    time.sleep(1)
    kill_9(own_broker)
    time.sleep(1)
    own_broker.start()
    wait(lambda: publisher.connected.is_set(), 20, "the agent back on the broker")
    if receipts:
        time.sleep(2)  # re-sent and acknowledged again by the broker, no receipt yet
        assert agent.queue.stats().depth > 0
        assert publisher.unreceipted > 0
    ingest = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
    try:
        ingest.wait_healthy()
        time.sleep(2)
        agent.stop_producers()  # the publisher goes on: what is queued goes out
        if receipts:
            wait(lambda: len(stored(db_url)) >= len(produced), 60, "every reading stored")
            wait(lambda: agent.queue.stats().depth == 0, 10, "receipts for every batch")
        else:
            time.sleep(5)
        depth = agent.queue.stats().depth
        agent.stop()
    finally:
        ingest.stop()
    rows = sorted(stored(db_url))
    produced_keys = sorted(produced)
    assert len(produced_keys) > 200
    assert depth == 0
    if receipts:
        assert rows == produced_keys  # none lost, none doubled
        seqs = batches_stored(db_url)
        assert len(seqs) == len(set(seqs))
        with psycopg.connect(db_url) as conn:
            rollups_match_raw(conn)
    else:  # what shows that this test can fail: the broker forgot what it acknowledged
        assert set(produced_keys) - set(rows)


def test_kill_9_of_the_database_mid_burst_and_of_ingest(pg_cluster, db_url, own_broker,
                                                         sim_modbus: Sim, tmp_path, running):
    ingest = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
    ingest.wait_healthy()
    config = edge_config(tmp_path, own_broker.url, SITE,
                         [sim_modbus.driver(d, interval_s=0.05) for d in DEVICES],
                         publish={"receipt_timeout_s": 1.0, "batch_max_readings": 20})
    agent, produced = spied_agent(config)
    running(agent)
    try:
        wait(lambda: len(stored(db_url)) >= 100, 20, "readings flowing")
        pg_cluster.kill()  # mid-burst: the drivers go on, ingest holds its window
        time.sleep(2)
        pg_cluster.start()
        wait(lambda: len(stored(db_url)) >= len(produced) // 2, 30, "ingest writing again")
        ingest.proc.send_signal(signal.SIGKILL)  # committed windows may miss their receipt
        ingest.proc.wait(10)
        time.sleep(1)
        ingest = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
        ingest.wait_healthy()
        time.sleep(2)
        agent.stop_producers()
        wait(lambda: len(stored(db_url)) >= len(produced), 60, "every reading stored")
        wait(lambda: agent.queue.stats().depth == 0, 10, "receipts for every batch")
        agent.stop()
    finally:
        ingest.stop()
    assert len(produced) > 300
    assert sorted(stored(db_url)) == sorted(produced)  # none lost, none doubled
    with psycopg.connect(db_url) as conn:
        rollups_match_raw(conn)
        missing = conn.execute("SELECT coalesce(sum(missing_batches), 0) "
                               "FROM device_sequence_gaps").fetchone()[0]
    assert missing == 0


def test_the_simulated_fleet_resends_what_a_killed_broker_forgot(db_url, forgetful_broker,
                                                                  tmp_path):
    own_broker = forgetful_broker
    sites = load_sites()[:6]
    batches = _known_batches(sites, n_per_device=10, per_batch=4, seed=5)
    ingest = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
    ingest.wait_healthy()
    ingest.stop()  # held back: the broker keeps the backlog, in memory
    publisher = FleetPublisher(mqtt.parse_mqtt_url(own_broker.url), sites,
                               receipts=True, receipt_timeout_s=1.0)
    try:
        publisher.start()
        publisher.publish(batches)  # every PUBACK is in
        assert publisher.unreceipted == len(batches)
        kill_9(own_broker)
        own_broker.start()
        ingest = IngestService(db_url, own_broker.url, tmp_path / "ingest", workers=1)
        ingest.wait_healthy()
        assert publisher.drain(60), f"{publisher.unreceipted} batches without a receipt"
    finally:
        publisher.stop(offline=False)
        ingest.stop()
    assert publisher.stats.resent > 0
    assert sorted(stored(db_url)) == _expected(batches)
    with psycopg.connect(db_url) as conn:
        missing = conn.execute("SELECT coalesce(sum(missing_batches), 0) "
                               "FROM device_sequence_gaps").fetchone()[0]
    assert missing == 0
