"""Device identity and access against a real Mosquitto started here: logins and roles
generated from the database (the dynamic-security plugin), the broker refusing what a
device may not do, changes through the plugin's API without a restart, TLS for the edge
agent and the API, and the per-device rate limit of ingest."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.conftest import scratch_dir
from tests.support.processes import IngestService
from tidefield.edge import uplink as edge_publisher
from tidefield.edge.agent import Agent
from tidefield.protocol import codec, mqtt
from tidefield.protocol.messages import Batch, DeviceState, Reading, Receipt, Status
from tidefield.protocol.topics import parse_topic, receipt_topic, status_topic, up_topic
from tidefield.server.api.app import create_app
from tidefield.server.embedded import MosquittoBroker, free_port, wait_for_port
from tidefield.server.ingest.directory import DeviceDirectory
from tidefield.server.ingest.pipeline import Envelope, prepare
from tidefield.server.security.accounts import provision_device, provision_service
from tidefield.server.security.api_keys import Scope, create_key
from tidefield.server.security.dynsec import BrokerAccess
from tidefield.server.security.tls import TlsFiles, ensure_dev_pki
from tidefield.server.settings import ApiSettings

from .test_edge_agent import edge_config

NOT_AUTHORIZED = 0x87
BAD_LOGIN = {0x86, 0x87}  # bad user name or password / not authorized
ACCEPTED = {0x00, 0x10}  # success / success, but nobody subscribes to it


@dataclass
class Secured:
    """A database, the broker's config generated from it, and a broker that enforces it."""

    db_url: str
    files: BrokerAccess
    broker: MosquittoBroker
    passwords: dict[str, str] = field(default_factory=dict)

    def url(self, username: str | None = None, password: str | None = None) -> str:
        scheme, rest = self.broker.url.split("://")
        if username is None:
            return self.broker.url
        password = self.passwords[username] if password is None else password
        return f"{scheme}://{username}:{password}@{rest}"


def _start_secured(db_url: str, *, devices: list[tuple[str, str]],
                   tls: TlsFiles | None = None) -> Secured:
    base = scratch_dir("tidefield-test-sec-")
    passwords = {}
    with psycopg.connect(db_url) as conn:
        for site, device in devices:
            passwords[device] = provision_device(conn, site, device).password
        for role in ("ingest", "admin"):
            passwords[f"svc_{role}"] = provision_service(conn, role).password
        BrokerAccess(base).write(conn)
    extra = BrokerAccess(base).conf_lines() + (tls.broker_conf_lines() if tls else [])
    broker = MosquittoBroker(base, extra_conf=extra, allow_anonymous=False, tls=tls is not None)
    broker.start()
    stack = Secured(db_url, BrokerAccess(base), broker, passwords)
    stack.files = BrokerAccess(base, stack.url("svc_admin"),
                               str(tls.ca_file) if tls else None)
    return stack


DEVICES = [("ag-001", "ag-001-soil"), ("ag-002", "ag-002-soil"), ("oc-031", "oc-031-gw")]


@pytest.fixture
def secured(db_url) -> Secured:
    stack = _start_secured(db_url, devices=DEVICES)
    yield stack
    stack.broker.stop()


class Probe:
    """A plain MQTT v5 client that records what the broker answers. Its client id is its
    user name, as the broker requires of a device login, unless ``client_id`` is given."""

    def __init__(self, url: str, *, ca_file: str | None = None,
                 client_id: str | None = None) -> None:
        self.address = mqtt.parse_mqtt_url(url, ca_file=ca_file)
        self.connack = None
        self.disconnected = threading.Event()
        self.subacks: list[list[int]] = []
        self.pubacks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._event = threading.Condition()
        if client_id is None:
            client_id = self.address.username or f"probe-{uuid.uuid4().hex[:8]}"
            if client_id.startswith("svc_"):  # a service login: any id, one per process
                client_id = f"{client_id}-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.new_client(client_id, self.address)
        self.client.on_connect = self._on_connect
        self.disconnect_reason: int | None = None
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))

    def connect(self, timeout: float = 5) -> int:
        """Connect once (no retries); the CONNACK reason code."""
        self.client.reconnect_delay_set(60, 60)
        mqtt.connect(self.client, self.address, clean_start=True)
        self.client.loop_start()
        with self._event:
            self._event.wait_for(lambda: self.connack is not None, timeout)
        assert self.connack is not None, "no CONNACK"
        return self.connack

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._event:
            self.connack = reason_code.value
            self._event.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnect_reason = reason_code.value
        self.disconnected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._event:
            self.subacks.append([code.value for code in reason_codes])
            self._event.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._event:
            self.pubacks[mid] = reason_code.value
            self._event.notify_all()

    def publish(self, topic: str, payload: bytes, timeout: float = 5) -> int:
        """Publish at QoS 1; the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self._event:
            self._event.wait_for(lambda: info.mid in self.pubacks, timeout)
        return self.pubacks[info.mid]

    def subscribe(self, topic: str, timeout: float = 5) -> list[int]:
        count = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        with self._event:
            self._event.wait_for(lambda: len(self.subacks) > count, timeout)
        return self.subacks[-1]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def batch_payload(site: str, device: str, seq: int, metric: str = "soil_moisture",
                  n: int = 3, start_ms: int | None = None) -> bytes:
    start_ms = int(time.time() * 1000) - 60_000 if start_ms is None else start_ms
    readings = tuple(Reading(metric, start_ms + i * 1000, 20.0 + i) for i in range(n))
    return codec.encode_batch(Batch(site, device, seq, readings))


def _rows(db_url: str, query: str, *args) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, args).fetchall()


def _wait_for(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _ingest(stack: Secured, tmp_path: Path, **env) -> IngestService:
    service = IngestService(stack.db_url, stack.url("svc_ingest"), tmp_path / "ingest",
                            workers=1, extra_env={k: str(v) for k, v in env.items()})
    service.wait_healthy()
    return service


# --- the acceptance tests -------------------------------------------------------------


def test_a_device_cannot_write_as_another_and_nothing_of_it_is_stored(secured, tmp_path):
    ingest = _ingest(secured, tmp_path)
    try:
        device_a = Probe(secured.url("ag-001-soil"))
        assert device_a.connect() == 0
        assert device_a.publish(up_topic("ag-001", "ag-001-soil"),
                                batch_payload("ag-001", "ag-001-soil", 0)) == 0
        # B's topic, with a payload that is B's in every way: the broker refuses it
        assert device_a.publish(up_topic("ag-002", "ag-002-soil"),
                                batch_payload("ag-002", "ag-002-soil", 0)) == NOT_AUTHORIZED
        # another site's topic with its own name in it: refused too
        assert device_a.publish(up_topic("ag-002", "ag-001-soil"),
                                batch_payload("ag-002", "ag-001-soil", 1)) == NOT_AUTHORIZED
        # its own topic, a payload claiming B: the broker passes it, ingest refuses it
        claimed = batch_payload("ag-002", "ag-002-soil", 5)
        assert device_a.publish(up_topic("ag-001", "ag-001-soil"), claimed) == 0
        # a gateway speaks for the devices of its own site, and no others
        gateway = Probe(secured.url("oc-031-gw"))
        assert gateway.connect() == 0
        assert gateway.publish(up_topic("oc-031", "oc-031-sonde"),
                               batch_payload("oc-031", "oc-031-sonde", 0,
                                             metric="water_temperature")) == 0
        assert gateway.publish(up_topic("ag-001", "ag-001-soil"),
                               batch_payload("ag-001", "ag-001-soil", 9)) == NOT_AUTHORIZED
        # a last message from A: once stored, everything A sent before it was handled
        assert device_a.publish(up_topic("ag-001", "ag-001-soil"),
                                batch_payload("ag-001", "ag-001-soil", 2)) == 0
        _wait_for(lambda: _rows(secured.db_url, "SELECT 1 FROM ingest_batches WHERE "
                                "device_id = 'ag-001-soil' AND seq = 2"), what="A's seq 2")
        _wait_for(lambda: _rows(secured.db_url, "SELECT 1 FROM ingest_batches WHERE "
                                "device_id = 'oc-031-sonde'"), what="the sonde's batch")
        batches = set(_rows(secured.db_url, "SELECT device_id, seq FROM ingest_batches"))
        assert batches == {("ag-001-soil", 0), ("ag-001-soil", 2), ("oc-031-sonde", 0)}
        rejects = _rows(secured.db_url, "SELECT topic, reason, payload FROM ingest_rejects")
        assert rejects == [(up_topic("ag-001", "ag-001-soil"), "identity_mismatch", claimed)]
        # nothing of B, nor anything under the site A may not write to, anywhere
        assert not _rows(secured.db_url, "SELECT 1 FROM device_status d WHERE "
                         "d.device_id = 'ag-002-soil' AND d.readings > 0")
        assert not _rows(secured.db_url, "SELECT 1 FROM readings r JOIN series s "
                         "ON s.id = r.series_id WHERE s.device_id = 'ag-002-soil'")
        device_a.close()
        gateway.close()
    finally:
        ingest.stop()


def test_the_ingest_login_may_take_telemetry_by_a_shared_subscription(secured, tmp_path):
    """TIDEFIELD_INGEST_SUBSCRIPTION=shared subscribes to ``$share/...``: the broker's
    ACL must grant it to the ingest login (healthy means every SUBACK granted)."""
    service = IngestService(secured.db_url, secured.url("svc_ingest"), tmp_path / "ingest",
                            workers=2, extra_env={"TIDEFIELD_INGEST_SUBSCRIPTION": "shared"})
    try:
        service.wait_healthy()
        device = Probe(secured.url("ag-001-soil"))
        assert device.connect() == 0
        for seq in range(4):
            assert device.publish(up_topic("ag-001", "ag-001-soil"),
                                  batch_payload("ag-001", "ag-001-soil", seq)) == 0
        _wait_for(lambda: len(_rows(secured.db_url, "SELECT 1 FROM ingest_batches")) == 4,
                  what="the 4 batches")
        device.close()
    finally:
        service.stop()


def test_a_device_may_not_subscribe_to_another_sites_topics(secured):
    """The broker refuses the SUBSCRIBE (SUBACK 0x87) and delivers nothing of it."""
    watcher = Probe(secured.url("svc_ingest"))
    assert watcher.connect() == 0
    assert watcher.subscribe("tf/v1/+/+/up") == [1]
    device_a = Probe(secured.url("ag-001-soil"))
    assert device_a.connect() == 0
    for topic in ("tf/v1/ag-002/#", "tf/v1/+/+/up", "tf/v1/ag-002/ag-002-soil/up",
                  "tf/v1/ag-002/ag-002-soil/down/#", "tf/v1/+/ag-001-soil/down/#",
                  "tf/v1/ag-001/+/up", "tf/v1/ag-001/ag-001-soil/up", "#",
                  "$share/x/tf/v1/+/+/up", "$CONTROL/dynamic-security/v1/response"):
        assert device_a.subscribe(topic) == [NOT_AUTHORIZED], topic
    # its own commands it may read, by any filter within its own down/
    assert device_a.subscribe("tf/v1/ag-001/ag-001-soil/down/#") == [1]
    assert device_a.subscribe("tf/v1/ag-001/ag-001-soil/down/config") == [1]
    device_b = Probe(secured.url("ag-002-soil"))
    assert device_b.connect() == 0
    for seq in range(3):
        assert device_b.publish(up_topic("ag-002", "ag-002-soil"),
                                batch_payload("ag-002", "ag-002-soil", seq)) == 0
    _wait_for(lambda: len(watcher.messages) == 3, 10, "the ingest login to see B's batches")
    time.sleep(0.5)  # the broker delivered to the watcher; give A's copies as long
    assert device_a.messages == []
    assert not device_a.disconnected.is_set()  # refused, not cut off
    for probe in (watcher, device_a, device_b):
        probe.close()


def test_a_device_reads_its_own_receipts_and_no_others(secured, tmp_path):
    """Ingest (its service login) sends receipts; a device may subscribe to its own and
    to no other device's, and may not write one (not even its own)."""
    ingest = _ingest(secured, tmp_path)
    try:
        device_a = Probe(secured.url("ag-001-soil"))
        device_b = Probe(secured.url("ag-002-soil"))
        assert device_a.connect() == 0 and device_b.connect() == 0
        assert device_a.subscribe(receipt_topic("ag-001", "ag-001-soil")) == [1]
        assert device_a.subscribe(receipt_topic("ag-002", "ag-002-soil")) == [NOT_AUTHORIZED]
        assert device_a.subscribe("tf/v1/+/+/down/receipt") == [NOT_AUTHORIZED]
        assert device_b.subscribe("tf/v1/ag-002/ag-002-soil/down/#") == [1]
        forged = codec.encode_receipt(Receipt("ag-002", "ag-002-soil", ((0, 99),)))
        assert device_a.publish(receipt_topic("ag-002", "ag-002-soil"),
                                forged) == NOT_AUTHORIZED
        own = codec.encode_receipt(Receipt("ag-001", "ag-001-soil", ((0, 99),)))
        assert device_a.publish(receipt_topic("ag-001", "ag-001-soil"), own) == NOT_AUTHORIZED
        for seq in (0, 1, 2, 4):
            assert device_a.publish(up_topic("ag-001", "ag-001-soil"),
                                    batch_payload("ag-001", "ag-001-soil", seq,
                                                  start_ms=int(time.time() * 1000) - 60_000
                                                  + seq * 10_000)) == 0
        for seq in (0, 1):
            assert device_b.publish(up_topic("ag-002", "ag-002-soil"),
                                    batch_payload("ag-002", "ag-002-soil", seq)) == 0

        def receipted(probe: Probe, topic: str) -> set[int]:
            seqs = set()
            for got_topic, payload in list(probe.messages):
                receipt = codec.decode_receipt(payload, topic=parse_topic(got_topic))
                assert got_topic == topic
                seqs |= {s for first, last in receipt.stored for s in range(first, last + 1)}
            return seqs

        a_topic = receipt_topic("ag-001", "ag-001-soil")
        b_topic = receipt_topic("ag-002", "ag-002-soil")
        _wait_for(lambda: receipted(device_a, a_topic) == {0, 1, 2, 4}, 15, "A's receipts")
        _wait_for(lambda: receipted(device_b, b_topic) == {0, 1}, 15, "B's receipts")
        # (every receipt A got was on its own topic: checked in receipted())
        # a receipt follows the commit: what it names is in the database
        assert {seq for (seq,) in _rows(secured.db_url, "SELECT seq FROM ingest_batches "
                                        "WHERE device_id = 'ag-001-soil'")} == {0, 1, 2, 4}
        device_a.close()
        device_b.close()
    finally:
        ingest.stop()


def test_a_device_may_not_use_another_devices_client_id(secured):
    """Each device login is bound to its own client id, so a cloned device cannot push
    another off the broker by connecting under its id."""
    device_a = Probe(secured.url("ag-001-soil"))
    assert device_a.connect() == 0
    thief = Probe(secured.url("ag-002-soil"), client_id="ag-001-soil")
    assert thief.connect() in BAD_LOGIN
    assert Probe(secured.url("ag-002-soil"), client_id="tidefield-ingest-1-0").connect() \
        in BAD_LOGIN
    time.sleep(0.3)
    assert not device_a.disconnected.is_set()
    assert device_a.publish(up_topic("ag-001", "ag-001-soil"), b"{}") in ACCEPTED
    device_a.close()


def test_anonymous_wrong_password_and_unknown_logins_are_refused(secured):
    assert Probe(secured.url()).connect() in BAD_LOGIN
    assert Probe(secured.url("ag-001-soil", "not-the-password")).connect() in BAD_LOGIN
    assert Probe(secured.url("ag-003-soil", "whatever")).connect() in BAD_LOGIN
    # the hash of one device is no password for another
    assert Probe(secured.url("ag-002-soil", secured.passwords["ag-001-soil"])).connect() \
        in BAD_LOGIN
    assert Probe(secured.url("ag-001-soil")).connect() == 0


def _cli(stack: Secured, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TIDEFIELD_DATABASE_URL": stack.db_url,
           "TIDEFIELD_BROKER_AUTH_DIR": str(stack.files.directory),
           "TIDEFIELD_BROKER_ADMIN_URL": stack.files.admin_url}
    return subprocess.run([sys.executable, "-m", "tidefield.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_provision_and_revoke_take_effect_without_a_broker_restart(secured):
    pid = secured.broker.proc.pid
    out = _cli(secured, "devices", "provision", "ag-003", "ag-003-soil")
    assert out.returncode == 0, out.stderr
    assert "applied to the running broker" in out.stderr and "warning" not in out.stderr
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert lines["username"] == "ag-003-soil"
    new_device = Probe(secured.url("ag-003-soil", lines["password"]))
    assert new_device.connect() == 0
    assert new_device.publish(up_topic("ag-003", "ag-003-soil"), b"{}") in ACCEPTED
    # asking twice is an error unless rotating; the device is checked against its site
    again = _cli(secured, "devices", "provision", "ag-003", "ag-003-soil")
    assert again.returncode == 2 and "--rotate" in again.stderr
    wrong = _cli(secured, "devices", "provision", "ag-001", "ag-003-soil")
    assert wrong.returncode == 2 and "belongs to site ag-003" in wrong.stderr

    # the new device may do what a device may, and no more
    assert new_device.subscribe("tf/v1/ag-003/ag-003-soil/down/#") == [1]
    assert new_device.subscribe("tf/v1/ag-001/#") == [NOT_AUTHORIZED]
    assert new_device.publish(up_topic("ag-001", "ag-001-soil"), b"{}") == NOT_AUTHORIZED
    assert Probe(secured.url("ag-003-soil", lines["password"]),
                 client_id="someone-else").connect() in BAD_LOGIN

    # rotation: the old password is dead at once, the new one works
    device_b = Probe(secured.url("ag-002-soil"))
    assert device_b.connect() == 0
    out = _cli(secured, "devices", "provision", "ag-002", "ag-002-soil", "--rotate")
    assert out.returncode == 0, out.stderr
    rotated = dict(line.split(": ", 1) for line in out.stdout.splitlines())["password"]
    assert device_b.disconnected.wait(5), "a rotated login's old session stays connected"
    assert Probe(secured.url("ag-002-soil")).connect() in BAD_LOGIN
    assert Probe(secured.url("ag-002-soil", rotated)).connect() == 0

    device_a = Probe(secured.url("ag-001-soil"))
    assert device_a.connect() == 0
    started = time.monotonic()
    out = _cli(secured, "devices", "revoke", "ag-001-soil")
    assert out.returncode == 0, out.stderr
    assert device_a.disconnected.wait(5), "a revoked device stays connected"
    print(f"revoke: cut off {time.monotonic() - started:.2f} s after the command started")
    assert device_a.disconnect_reason == 0x98  # administrative action
    assert Probe(secured.url("ag-001-soil")).connect() in BAD_LOGIN
    # the others are untouched, and the broker is the same process
    assert new_device.publish(up_topic("ag-003", "ag-003-soil"), b"{}") in ACCEPTED
    assert not new_device.disconnected.is_set()
    assert secured.broker.proc.pid == pid and secured.broker.running()
    listed = _cli(secured, "devices", "list", "--all").stdout
    assert "ag-001-soil\tdevice\tag-001" in listed and "revoked" in listed
    assert "oc-031-gw\tgateway\toc-031" in listed
    new_device.close()

    # the config file is what the database says, so a restarted broker agrees
    secured.broker.restart()
    assert Probe(secured.url("ag-001-soil")).connect() in BAD_LOGIN
    assert Probe(secured.url("ag-002-soil", rotated)).connect() == 0
    assert Probe(secured.url("ag-003-soil", lines["password"])).connect() == 0
    assert Probe(secured.url("ag-002-soil")).connect() in BAD_LOGIN


def test_the_edge_agent_verifies_the_broker_certificate(db_url, tmp_path, monkeypatch):
    monkeypatch.setattr(edge_publisher, "RECONNECT_FIRST_S", 0.2)
    monkeypatch.setattr(edge_publisher, "RECONNECT_MAX_S", 0.5)
    pki = ensure_dev_pki(tmp_path / "pki")
    rogue = ensure_dev_pki(tmp_path / "rogue")  # same names, another CA
    stack = _start_secured(db_url, devices=[("oc-031", "oc-031-gw")], tls=pki)
    impostor = MosquittoBroker(scratch_dir("tidefield-test-rogue-"), allow_anonymous=True,
                               extra_conf=rogue.broker_conf_lines(), tls=True)
    impostor.start()
    agents = []
    try:
        assert stack.broker.url.startswith("mqtts://")
        watcher = Probe(stack.url("svc_ingest"), ca_file=str(pki.ca_file))
        assert watcher.connect() == 0
        watcher.subscribe("tf/v1/+/+/status")
        # plain MQTT to a TLS listener gets nowhere
        with pytest.raises((TimeoutError, AssertionError, OSError)):
            Probe(stack.url("svc_ingest").replace("mqtts://", "mqtt://")).connect(timeout=2)

        def agent_for(broker_url: str, name: str) -> Agent:
            # no drivers: the gateway's birth message is what we look for
            config = edge_config(
                tmp_path / name, broker_url, "oc-031", [],
                broker={"username": "oc-031-gw", "password": stack.passwords["oc-031-gw"],
                        "ca_file": str(pki.ca_file)})
            agent = Agent(config)
            agents.append(agent)
            agent.start()
            return agent

        good = agent_for(stack.broker.url, "good")
        assert good.publisher.connected.wait(15), "the agent did not connect over TLS"
        _wait_for(lambda: any(t == status_topic("oc-031", "oc-031-gw")
                              for t, _ in watcher.messages), 20, "the agent's birth over TLS")

        fooled = agent_for(impostor.url, "fooled")
        time.sleep(3)  # several attempts
        assert not fooled.publisher.connected.is_set()
        spy = Probe(impostor.url, ca_file=str(rogue.ca_file))
        assert spy.connect() == 0
        spy.subscribe("#")
        time.sleep(1)
        assert spy.messages == []  # no retained birth, nothing: the agent never got in
        spy.close()
        watcher.close()
    finally:
        for agent in agents:
            agent.stop()
        impostor.stop()
        stack.broker.stop()


def test_the_api_speaks_tls_when_asked(db_url, tmp_path):
    port = free_port()
    env = {**os.environ, "TIDEFIELD_DATABASE_URL": db_url, "TIDEFIELD_TLS": "true",
           "TIDEFIELD_DATA_DIR": str(tmp_path), "TIDEFIELD_API_PORT": str(port)}
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "tidefield.cli", "api"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout=60, alive=lambda: proc.poll() is None)
        ca = tmp_path / "tls" / "ca.pem"  # the development CA the API made on start
        answer = httpx.get(f"https://127.0.0.1:{port}/api/v1/sites",
                           verify=ssl.create_default_context(cafile=str(ca)))
        assert answer.status_code == 401  # TLS worked; the key check is next
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/sites", timeout=3)
        other = ensure_dev_pki(tmp_path / "other")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/api/v1/sites",
                      verify=ssl.create_default_context(cafile=str(other.ca_file)))
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_a_status_may_not_speak_for_a_device_of_another_site(db_url):
    """Defence behind the ACL: topic and payload agree, but the device is another site's."""
    status = codec.encode_status(Status("ag-002", "ag-001-soil", DeviceState.ONLINE, 0))
    envelope = Envelope("tf/v1/ag-002/ag-001-soil/status", status, None, 0)
    directory = DeviceDirectory(db_url)
    try:
        prepared = prepare([envelope], directory, limits=codec.DEFAULT_LIMITS,
                           now_ms=int(time.time() * 1000))
    finally:
        directory.close()
    assert prepared.statuses == []
    assert [r.reason for r in prepared.rejects] == ["identity_mismatch"]


# --- the flood ----------------------------------------------------------------------

RATE, BURST = 100.0, 4000  # readings per second of device time, per device
FLOOD_RATE, FLOOD_READINGS, FLOOD_SPAN_MS = 50, 2000, 2000  # 1,000 per device-second: 10x
FLOOD_S = 8.0
QUIET = [("ag-001", "ag-001-soil"), ("ag-002", "ag-002-soil"), ("ag-003", "ag-003-soil"),
         ("ag-004", "ag-004-soil")]
FLOODER = ("oc-031", "oc-031-sonde")
BACKLOG = ("ag-005", "ag-005-soil")
BACKLOG_H, BACKLOG_EVERY_MS, BACKLOG_BATCH = 2, 1000, 500


def backlog_payloads(now_ms: int) -> tuple[list[bytes], int]:
    """Two hours of a soil probe's three metrics every second, as an edge agent back
    from an outage sends them: 500-reading batches with the device's own timestamps."""
    readings = [Reading(metric, t, value)
                for t in range(now_ms - BACKLOG_H * 3_600_000, now_ms, BACKLOG_EVERY_MS)
                for metric, value in (("soil_moisture", 25.0), ("soil_temperature", 15.0),
                                      ("soil_ec", 1.2))]
    batches = [readings[i:i + BACKLOG_BATCH] for i in range(0, len(readings), BACKLOG_BATCH)]
    return [codec.encode_batch(Batch(*BACKLOG, seq, tuple(batch)), codec.MSGPACK)
            for seq, batch in enumerate(batches)], len(readings)


def test_a_flooding_device_is_limited_and_the_others_arrive_complete_and_on_time(
        db_url, tmp_path):
    """One device at 10x its budget (1,000 readings per second of its own clock, 50
    messages a second) and another delivering a 2-hour backlog as fast as it can (3
    readings per device-second, 44 messages at once) share one ingest process with four
    quiet devices sending one small batch a second. The backlog is stored whole (under
    the old limit of messages per second most of it was refused), the flood gets its
    budget and no more, the quiet devices arrive complete and on time."""
    stack = _start_secured(db_url, devices=[*QUIET, BACKLOG, ("oc-031", "oc-031-gw")])
    ingest = _ingest(stack, tmp_path, TIDEFIELD_INGEST_DEVICE_READINGS_PER_S=RATE,
                     TIDEFIELD_INGEST_DEVICE_BURST_READINGS=BURST,
                     TIDEFIELD_INGEST_MAX_READINGS=FLOOD_READINGS)
    try:
        now_ms = int(time.time() * 1000)
        flood_total = int(FLOOD_S * FLOOD_RATE)
        # encoded beforehand so the publisher does not compete
        flood = [codec.encode_batch(Batch(*FLOODER, seq, tuple(
            Reading("water_temperature", now_ms - 3_600_000 + seq * FLOOD_SPAN_MS
                    + i * FLOOD_SPAN_MS // FLOOD_READINGS, 15.0)
            for i in range(FLOOD_READINGS))), codec.MSGPACK) for seq in range(flood_total)]
        backlog, backlog_readings = backlog_payloads(now_ms)
        published: dict[tuple[str, int], float] = {}
        seen: dict[tuple[str, int], float] = {}
        stop = threading.Event()

        def watch() -> None:
            with psycopg.connect(stack.db_url, autocommit=True) as conn:
                while not stop.is_set():
                    now = time.monotonic()
                    for device, seq in conn.execute(
                            "SELECT device_id, seq FROM ingest_batches WHERE device_id "
                            "<> ALL(%s)", ([FLOODER[1], BACKLOG[1]],)):
                        seen.setdefault((device, seq), now)
                    time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        quiet = {device: Probe(stack.url(device)) for _, device in QUIET}
        for probe in quiet.values():
            assert probe.connect() == 0
        flooder = Probe(stack.url("oc-031-gw"))
        assert flooder.connect() == 0
        backlogger = Probe(stack.url(BACKLOG[1]))
        assert backlogger.connect() == 0
        props = mqtt.publish_properties(codec.MSGPACK)

        def run_flood() -> None:
            started = time.monotonic()
            for i, payload in enumerate(flood):
                delay = started + i / FLOOD_RATE - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                flooder.client.publish(up_topic(*FLOODER), payload, qos=1, properties=props)
                if i == FLOOD_RATE * 2:  # two seconds in: the backlog, all at once
                    for message in backlog:
                        backlogger.client.publish(up_topic(*BACKLOG), message, qos=1,
                                                  properties=props)

        flood_thread = threading.Thread(target=run_flood, daemon=True)
        flood_thread.start()
        started = time.monotonic()
        seq = 0
        while time.monotonic() - started < FLOOD_S:
            for site, device in QUIET:
                published[(device, seq)] = time.monotonic()
                assert quiet[device].publish(up_topic(site, device),
                                             batch_payload(site, device, seq, n=5)) == 0
            seq += 1
            time.sleep(max(0.0, started + seq - time.monotonic()))
        flood_thread.join(30)
        _wait_for(lambda: len(seen) == len(published), 30, "the quiet devices' batches")
        stop.set()
        watcher.join(5)

        late = sorted(seen[key] - t for key, t in published.items())
        worst = late[-1]
        print(f"quiet batches: {len(late)}, median {late[len(late) // 2]:.3f} s, "
              f"worst {worst:.3f} s")
        assert worst < 2.0, f"a quiet device's batch took {worst:.2f} s"
        stored = _rows(stack.db_url, "SELECT device_id, count(*), sum(readings) "
                       "FROM ingest_batches GROUP BY device_id")
        per_device = {d: (n, r) for d, n, r in stored}
        for _, device in QUIET:
            assert per_device[device] == (seq, seq * 5)  # complete

        # the backlog: every batch and reading, nothing refused
        _wait_for(lambda: _rows(stack.db_url, "SELECT count(*) FROM ingest_batches WHERE "
                                "device_id = %s", BACKLOG[1])[0][0] == len(backlog), 30,
                  "the whole backlog")
        assert _rows(stack.db_url, "SELECT count(*), sum(readings) FROM ingest_batches "
                     "WHERE device_id = %s", BACKLOG[1]) == [(len(backlog), backlog_readings)]
        assert _rows(stack.db_url, "SELECT count(*) FROM readings r JOIN series s ON "
                     "s.id = r.series_id WHERE s.device_id = %s",
                     BACKLOG[1]) == [(backlog_readings,)]
        assert not _rows(stack.db_url, "SELECT 1 FROM ingest_rejects WHERE device_id = %s",
                         BACKLOG[1])

        # the flooder: what was not stored is counted in the rejects, every message once
        def accounted() -> tuple[int, int]:
            accepted = per_device_now().get(FLOODER[1], 0)
            limited = _rows(stack.db_url, "SELECT coalesce(sum(messages), 0) FROM "
                            "ingest_rejects WHERE reason = 'rate_limited' AND device_id = %s",
                            FLOODER[1])[0][0]
            return accepted, limited

        def per_device_now() -> dict[str, int]:
            return dict(_rows(stack.db_url, "SELECT device_id, count(*) FROM ingest_batches "
                              "GROUP BY device_id"))

        _wait_for(lambda: sum(accounted()) == flood_total, 30, "every flood message counted")
        accepted, limited = accounted()
        print(f"flood: {flood_total} messages, {accepted} stored, {limited} rate-limited; "
              f"backlog: {len(backlog)} messages, {backlog_readings} readings, all stored")
        covered_s = flood_total * FLOOD_SPAN_MS / 1000  # the device time the flood spans
        allowed = (BURST + RATE * covered_s) / FLOOD_READINGS  # messages
        assert allowed - 2 <= accepted <= allowed, (accepted, allowed)
        rows = _rows(stack.db_url, "SELECT count(*), min(messages), max(messages) FROM "
                     "ingest_rejects WHERE reason = 'rate_limited'")[0]
        assert rows[0] < limited  # counted, not stored one by one
        assert _rows(stack.db_url, "SELECT count(*) FROM ingest_rejects "
                     "WHERE reason <> 'rate_limited'")[0][0] == 0
        for probe in [*quiet.values(), flooder]:
            probe.close()
    finally:
        ingest.stop()
        stack.broker.stop()


def test_over_http_a_backlog_is_taken_and_a_flood_is_told_to_come_back(db_url):
    """HTTP ingest charges the same budget: two hours of history at once are stored;
    dense readings over the budget get 429 with Retry-After, and nothing is stored."""
    with psycopg.connect(db_url) as conn:
        key = create_key(conn, "gw", [Scope.INGEST])
    settings = ApiSettings(database_url=db_url, ingest_device_readings_per_s=1,
                        ingest_device_burst_readings=100, ingest_max_readings=100)
    now_ms = int(time.time() * 1000)
    url, headers = "/api/v1/ingest/ag-001/ag-001-soil", {"X-API-Key": key}
    # two hours of three metrics a minute: 360 readings, 0.05 per device-second
    history = [{"m": m, "t": t, "v": 20.0} for t in range(now_ms - 7_200_000, now_ms, 60_000)
               for m in ("soil_moisture", "soil_temperature", "soil_ec")]
    with TestClient(create_app(settings)) as client:
        for seq, start in enumerate(range(0, len(history), 100)):
            answer = client.post(url, headers=headers, json={
                "v": 1, "site": "ag-001", "device": "ag-001-soil", "seq": seq,
                "readings": history[start:start + 100]})
            assert answer.status_code == 200, answer.text
        # 100 readings within one second of device time, twice: the second is too dense
        dense = [{"m": "soil_moisture", "t": now_ms + i, "v": 20.0} for i in range(100)]
        answers = [client.post(url, headers=headers, json={
            "v": 1, "site": "ag-001", "device": "ag-001-soil", "seq": seq,
            "readings": dense}) for seq in (10, 11)]
    assert answers[0].status_code == 200, answers[0].text
    assert answers[1].status_code == 429
    assert 60 <= int(answers[1].headers["Retry-After"]) <= 100
    assert _rows(db_url, "SELECT count(*), sum(readings) FROM ingest_batches "
                 "WHERE device_id = 'ag-001-soil'") == [(5, 460)]
    assert _rows(db_url, "SELECT count(*) FROM ingest_rejects") == [(0,)]
