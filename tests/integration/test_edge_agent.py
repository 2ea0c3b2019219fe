"""The agent end to end: firmware-sim Modbus devices -> agent -> real Mosquitto -> a plain
subscriber. Also home of the subscriber the other edge tests use."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from tidefield.edge import agent as agent_module
from tidefield.edge import uplink as publisher
from tidefield.edge.agent import Agent
from tidefield.edge.config import parse_config
from tidefield.edge.queue import DiskQueue
from tidefield.protocol import codec, mqtt
from tidefield.protocol.catalog import AGENT_METRICS
from tidefield.protocol.messages import Batch, DeviceState, Reading, Receipt, Status
from tidefield.protocol.topics import Channel, parse_topic, receipt_topic
from tidefield.server.embedded import MosquittoBroker, free_port

from .test_edge_modbus import Sim, matches, sim


@pytest.fixture
def sim_modbus() -> Sim:
    return sim()


class Watcher:
    """Everything published under tf/v1/{site}/#, decoded as it arrives (a plain paho
    client, as any consumer would be). ``persistent``: the broker keeps the session and
    queues for it while the connection is down. ``receipts``: it answers each batch with
    a receipt, as ingest does after its commit (the agent keeps batches until then)."""

    def __init__(self, address: mqtt.BrokerAddress | str, site: str, *,
                 persistent: bool = False, receipts: bool = True) -> None:
        self.address = mqtt.parse_mqtt_url(address) if isinstance(address, str) else address
        self.site = site
        self.batches: list[Batch] = []
        self.statuses: list[Status] = []
        self.rejected: list = []
        self.receipts = receipts
        self._subscribed = threading.Event()
        self.client = mqtt.new_client(f"watch-{site}-{uuid.uuid4().hex[:8]}", self.address)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        mqtt.connect(self.client, self.address, clean_start=not persistent,
                     session_expiry_s=3600 if persistent else 0)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"could not subscribe at {self.address}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(f"tf/v1/{self.site}/#", qos=1)

    def _on_message(self, client, userdata, message) -> None:
        msg = mqtt.to_message(message)
        topic = parse_topic(msg.topic)
        if topic.channel is Channel.STATUS:
            self.statuses.append(codec.decode_status(msg.payload, msg.content_type,
                                                     topic=topic))
        elif topic.channel is Channel.UP:
            decoded = codec.decode_batch(msg.payload, msg.content_type, topic=topic,
                                         now_ms=int(time.time() * 1000))
            self.rejected += decoded.rejected
            self.batches.append(decoded.batch)
            if self.receipts:
                receipt = Receipt(decoded.site, decoded.device, ((decoded.seq, decoded.seq),))
                client.publish(receipt_topic(decoded.site, decoded.device),
                               codec.encode_receipt(receipt), qos=1)

    def of(self, device: str) -> list[Batch]:
        return [b for b in list(self.batches) if b.device == device]

    def readings(self, device: str) -> set[tuple[str, int, float]]:
        return {(r.metric, r.time_ms, r.value) for b in self.of(device) for r in b.readings}

    def state(self, device: str) -> DeviceState | None:
        states = [s.state for s in list(self.statuses) if s.device == device]
        return states[-1] if states else None

    def wait(self, condition, timeout: float, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def first_copies(batches: list[Batch]) -> list[Batch]:
    """Each (device, seq) once, at its first arrival (re-deliveries are allowed)."""
    seen: set[tuple[str, int]] = set()
    out = []
    for batch in batches:
        if (batch.device, batch.seq) not in seen:
            seen.add((batch.device, batch.seq))
            out.append(batch)
    return out


def edge_config(tmp_path: Path, broker_url: str, site: str, drivers: list, **sections):
    data = {"site": site, "broker": {"url": broker_url},
            "queue": {"path": str(tmp_path / "queue.db")},
            "publish": {"batch_max_wait_s": 0.2},
            "health": {"interval_s": 3600}, "drivers": drivers}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values} if isinstance(values, dict) else values
    return parse_config(data)


def short_retries(monkeypatch) -> None:
    """Reconnect and driver backoff in fractions of a second."""
    monkeypatch.setattr(publisher, "RECONNECT_FIRST_S", 0.2)
    monkeypatch.setattr(publisher, "RECONNECT_MAX_S", 1.0)
    monkeypatch.setattr(agent_module, "DRIVER_BACKOFF_FIRST_S", 0.1)
    monkeypatch.setattr(agent_module, "DRIVER_BACKOFF_MAX_S", 0.5)


class Running:
    """start(agent) starts an agent; every agent started is stopped at the end."""

    def __init__(self) -> None:
        self.agents: list[Agent] = []

    def __call__(self, agent: Agent) -> Agent:
        self.agents.append(agent)
        agent.start()
        return agent

    def stop_all(self) -> None:
        for agent in self.agents:
            if not agent._stop.is_set():
                agent.stop()


@pytest.fixture
def fast_retries(monkeypatch) -> None:
    short_retries(monkeypatch)


@pytest.fixture
def running():
    started = Running()
    yield started
    started.stop_all()


SOIL_METRICS = ("soil_moisture", "soil_temperature", "soil_ec")
SITE_DEVICES = {"ag-001": ["ag-001-soil", "ag-001-wx"],  # fixed point ints; floats
                "oc-001": ["oc-001-sonde", "oc-001-tide"]}


@pytest.mark.parametrize("site", sorted(SITE_DEVICES))
def test_normal_flow(broker, sim_modbus: Sim, tmp_path, running, site):
    """Readings polled over Modbus TCP arrive with the right values, units and times."""
    devices = SITE_DEVICES[site]
    watcher = Watcher(broker.url, site)
    config = edge_config(tmp_path, broker.url, site, [sim_modbus.driver(d) for d in devices],
                         health={"interval_s": 0.5})
    started_ms = int(time.time() * 1000)
    agent = running(Agent(config))
    gateway = f"{site}-gw"

    def complete() -> bool:
        health = {r.metric for b in watcher.of(gateway) for r in b.readings}
        return health == set(AGENT_METRICS) and all(len(watcher.of(d)) >= 4 for d in devices)

    watcher.wait(complete, 20, "4 batches per device and every health metric")
    agent.stop()
    stopped_ms = int(time.time() * 1000)
    watcher.wait(lambda: all(watcher.state(d) is DeviceState.OFFLINE for d in devices),
                 5, "offline statuses")
    watcher.close()

    assert watcher.rejected == []  # ingest's own validation passes every reading
    assert {s.device for s in watcher.statuses if s.state is DeviceState.ONLINE} == {
        *devices, gateway}
    for device in devices:
        batches = watcher.of(device)
        assert [b.seq for b in batches] == list(range(len(batches)))  # 0, 1, 2, ...
        readings = [r for b in batches for r in b.readings]
        assert {r.metric for r in readings} == set(sim_modbus.metrics_of[device])
        times = [r.time_ms for r in readings]
        assert times == sorted(times)
        assert started_ms <= times[0] and times[-1] <= stopped_ms
        assert len(set(times)) >= 4  # each poll has its own time: read time, not send time
        wrong = [r for r in readings if not matches(sim_modbus, device, r)]
        assert wrong == []
    health = [r for b in watcher.of(gateway) for r in b.readings]
    by_metric = defaultdict(list)
    for reading in health:
        by_metric[reading.metric].append(reading.value)
    assert all(0 < v < 4000 for v in by_metric["agent_rss"])  # of this test process
    assert all(0 <= v < 5000 for v in by_metric["agent_publish_latency"])
    assert set(by_metric["agent_dropped"]) == {0.0}


def test_a_clean_stop_sends_what_is_queued(broker, sim_modbus: Sim, tmp_path, running):
    """Batches wait up to a minute to fill; stopping does not leave them on disk."""
    device = "ag-001-soil"
    watcher = Watcher(broker.url, "ag-001")
    config = edge_config(tmp_path, broker.url, "ag-001",
                         [sim_modbus.driver(device, interval_s=0.1)],
                         publish={"batch_max_wait_s": 60, "batch_max_readings": 10_000})
    agent = Agent(config)
    produced = []
    put = agent.queue.put

    def spy(device, readings):
        result = put(device, readings)
        produced.extend((r.metric, r.time_ms, r.value) for r in readings)
        return result

    agent.queue.put = spy
    running(agent)
    time.sleep(1.5)
    assert watcher.of(device) == []  # nothing is due yet
    agent.stop()
    watcher.wait(lambda: watcher.state(device) is DeviceState.OFFLINE, 5, "offline status")
    watcher.close()
    assert len(produced) >= 3 * 10
    assert watcher.readings(device) == set(produced)
    # what the receipts named left the disk queue
    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 0


@pytest.mark.parametrize("when_full", ["drop_oldest", "refuse_newest"])
def test_a_full_queue_applies_its_policy_and_counts_exactly(sim_modbus: Sim, tmp_path,
                                                           running, fast_retries, when_full):
    port = free_port()  # the broker is not there yet: everything stays queued
    url = f"mqtt://127.0.0.1:{port}"
    capacity = 12
    config = edge_config(tmp_path, url, "ag-001",
                         [sim_modbus.driver("ag-001-soil", interval_s=0.05)],
                         queue={"max_readings": capacity, "when_full": when_full})
    agent = Agent(config)
    produced: list = []
    put = agent.queue.put

    def spy(device, readings):
        produced.extend((device, r.metric, r.time_ms, r.value) for r in readings)
        return put(device, readings)

    agent.queue.put = spy
    running(agent)
    deadline = time.monotonic() + 10
    while len(produced) < 45 and time.monotonic() < deadline:
        time.sleep(0.05)
    agent.stop()
    dropped = len(produced) - capacity
    assert dropped > 30
    kept = produced[-capacity:] if when_full == "drop_oldest" else produced[:capacity]

    with DiskQueue(config.queue.path, site="ag-001") as queue:
        stats = queue.stats()
    assert (stats.depth, stats.dropped_full, stats.dropped) == (capacity, dropped, dropped)

    # the broker comes up; an agent without drivers delivers what was kept and reports
    # the count
    with MosquittoBroker(Path(tempfile.mkdtemp(prefix="tidefield-test-mqtt-", dir="/var/tmp")),
                         port=port) as broker:
        watcher = Watcher(broker.url, "ag-001")
        config = edge_config(tmp_path, url, "ag-001", [], health={"interval_s": 0.3},
                             queue={"max_readings": 1000, "when_full": when_full})
        running(Agent(config))
        watcher.wait(lambda: len(watcher.readings("ag-001-soil")) >= capacity
                     and watcher.of("ag-001-gw"), 10, "the kept readings and a health report")
        watcher.close()
    assert sorted(watcher.readings("ag-001-soil")) == sorted(k[1:] for k in kept)
    reported = [r.value for b in watcher.of("ag-001-gw") for r in b.readings
                if r.metric == "agent_dropped"]
    assert reported[0] == dropped


def test_failing_devices_are_reported_and_the_agent_keeps_running(broker, sim_modbus: Sim,
                                                                  tmp_path, running,
                                                                  fast_retries, caplog):
    caplog.set_level(logging.INFO, logger="tidefield.edge")
    wx = sim_modbus.driver("ag-001-wx")
    wx_near = {**wx, "registers": dict(list(wx["registers"].items())[:4])}
    wx_far = {**wx, "registers": dict(list(wx["registers"].items())[4:]),  # another gateway
              "port": free_port()}
    drivers = [wx_near, wx_far, sim_modbus.driver("ag-001-soil"),
               sim_modbus.driver("ag-001-leaf", timeout_s=0.3),
               sim_modbus.driver("ag-001-gw")]
    watcher = Watcher(broker.url, "ag-001")
    faults = {"ag-001-soil": "ffff", "ag-001-leaf": "timeout", "ag-001-gw": "exception"}
    for device, mode in faults.items():
        sim_modbus.fault(device, mode)
    try:
        agent = running(Agent(edge_config(tmp_path, broker.url, "ag-001", drivers)))
        near, far, soil, leaf, gw = agent.drivers
        watcher.wait(lambda: len(watcher.of("ag-001-wx")) >= 6, 10, "wx batches")
        faulted = set(soil.faults)
        during = len(watcher.readings("ag-001-soil"))
    finally:
        for device in faults:
            sim_modbus.fault(device, None)
    watcher.wait(lambda: all(watcher.of(d) for d in ("ag-001-soil", "ag-001-leaf",
                                                     "ag-001-gw")), 10, "recovered devices")
    assert agent.publisher.connected.is_set()
    agent.stop()
    watcher.close()

    assert during == 0 and faulted == set(SOIL_METRICS)  # garbage never left the agent
    assert {m for m, _, _ in watcher.readings("ag-001-wx")} == set(wx_near["registers"])
    assert near.failures == 0 and far.failures >= 2  # still failing, still retried
    assert soil.fault_count >= 3 and soil.faults == {}  # valid again
    assert leaf.failures == gw.failures == 0  # recovered
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for device, problem in [("ag-001-wx", "cannot connect to 127.0.0.1"),
                            ("ag-001-leaf", "no answer from unit 3"),
                            ("ag-001-gw", "exception 4 (device failure)")]:
        warned = [m for m in messages if m.startswith(f"{device}: poll failed")]
        assert len(warned) == 1 and problem in warned[0] and "retrying in" in warned[0], warned
    for metric in SOIL_METRICS:
        assert sum(m.startswith(f"ag-001-soil {metric}: ") for m in messages) == 1


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key",
                                                       "server.csr", "server.pem"))

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=tidefield-test-ca", "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(key), "-out", str(csr))
    extensions = folder / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    return ca, cert, key


def test_tls_and_password(sim_modbus: Sim, tmp_path, running, fast_retries, caplog,
                          monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="tidefield-test-mqtt-", dir="/var/tmp"))
    ca, cert, key = _certificates(folder)
    passwords = folder / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "ag-001", "s3cret"],
                   check=True, capture_output=True)
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    monkeypatch.setattr(publisher, "REFUSED_RETRY_S", 0.5)
    with MosquittoBroker(folder, allow_anonymous=False, extra_conf=[
            f"password_file {passwords}", f"certfile {cert}", f"keyfile {key}"]) as broker:
        url = f"mqtts://127.0.0.1:{broker.port}"
        address = mqtt.BrokerAddress("127.0.0.1", broker.port, "ag-001", "s3cret", True, str(ca))
        watcher = Watcher(address, "ag-001")
        drivers = [sim_modbus.driver("ag-001-soil")]
        good = edge_config(tmp_path, url, "ag-001", drivers, broker={
            "username": "ag-001", "password_file": str(secret), "ca_file": str(ca),
            "content_type": "msgpack"})
        agent = running(Agent(good))
        watcher.wait(lambda: len(watcher.of("ag-001-soil")) >= 2, 10, "batches over TLS")
        agent.stop()

        bad = edge_config(tmp_path / "bad", url, "ag-001", drivers, broker={
            "username": "ag-001", "password": "guess", "ca_file": str(ca)})
        agent = running(Agent(bad))
        time.sleep(1.5)
        depth = agent.queue.stats().depth
        agent.stop()
        watcher.close()
    assert depth > 0  # readings wait in the queue for the credentials to be fixed
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert refusals and all("refused the connection" in m for m in refusals)
    assert all("Not authorized" in m or "Bad user name or password" in m for m in refusals)
    assert len(refusals) <= 4  # asked again every REFUSED_RETRY_S, not hammered


def test_a_batch_stays_on_disk_until_a_receipt_names_it(broker, sim_modbus: Sim, tmp_path,
                                                         running):
    """PUBACKs alone delete nothing: without receipts the batches go again after their
    timeout (doubling); a receipt, when it comes, empties the queue."""
    device = "ag-001-soil"
    silent = Watcher(broker.url, "ag-001", receipts=False)
    config = edge_config(tmp_path, broker.url, "ag-001",
                         [sim_modbus.driver(device, interval_s=0.1)],
                         publish={"receipt_timeout_s": 0.5})
    agent = running(Agent(config))
    silent.wait(lambda: len(silent.of(device)) >= 5, 10, "batches")
    agent.stop_producers()
    time.sleep(3)
    assert agent.queue.stats().depth > 0  # acknowledged by the broker, kept on disk
    seqs = [b.seq for b in silent.of(device)]
    assert len(seqs) > len(set(seqs))  # sent again for want of a receipt
    assert agent.publisher.resent > 0
    answering = Watcher(broker.url, "ag-001")
    answering.wait(lambda: agent.queue.stats().depth == 0, 20, "receipts emptying the queue")
    assert {b.seq for b in answering.of(device)} <= set(seqs)  # re-sends, nothing new
    agent.stop()
    silent.close()
    answering.close()


def test_an_agent_without_receipts_deletes_a_batch_on_its_puback(broker, sim_modbus: Sim,
                                                                 tmp_path, running):
    """publish.receipts false: as agents before receipts did (a server that sends none)."""
    device = "ag-001-soil"
    silent = Watcher(broker.url, "ag-001", receipts=False)
    config = edge_config(tmp_path, broker.url, "ag-001",
                         [sim_modbus.driver(device, interval_s=0.1)],
                         publish={"receipts": False, "receipt_timeout_s": 0.5})
    agent = running(Agent(config))
    silent.wait(lambda: len(silent.of(device)) >= 5, 10, "batches")
    agent.stop_producers()
    silent.wait(lambda: agent.queue.stats().depth == 0, 10, "PUBACKs emptying the queue")
    time.sleep(1.5)
    seqs = [b.seq for b in silent.of(device)]
    assert len(seqs) == len(set(seqs))  # nothing went twice
    agent.stop()
    silent.close()


def test_a_backlog_of_devices_no_longer_configured_is_receipted_too(broker, tmp_path,
                                                                    running):
    """The agent subscribes to the receipts of every device its queue holds, not only of
    those its config has now (a backlog left by an earlier config drains to empty)."""
    now = int(time.time() * 1000)
    with DiskQueue(tmp_path / "queue.db", site="ag-001") as queue:
        for device in ("ag-001-soil", "ag-001-wx"):
            queue.put(device, [Reading("soil_moisture", now - i * 1000, 20.0 + i % 7)
                               for i in range(1200)])
    watcher = Watcher(broker.url, "ag-001")
    agent = running(Agent(edge_config(tmp_path, broker.url, "ag-001", [])))
    watcher.wait(lambda: len(watcher.readings("ag-001-soil")) == 1200
                 and len(watcher.readings("ag-001-wx")) == 1200, 20, "the backlog")
    watcher.wait(lambda: agent.queue.stats().depth == 0, 20, "receipts emptying the queue")
    agent.stop()
    watcher.close()
