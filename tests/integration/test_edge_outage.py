"""The agent through the failures it is built for: the broker gone for more than 30 s, and
the agent itself killed with SIGKILL (a power cut, as far as its files can tell)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tidefield.edge.agent import Agent
from tidefield.protocol.messages import DeviceState

from .test_edge_agent import Running, Watcher, edge_config, first_copies, short_retries
from .test_edge_modbus import Sim, matches, sim

OUTAGE_S = 32  # the acceptance asks for 30 s or more, real seconds
DEVICES = ["ag-001-soil", "ag-001-wx", "ag-001-leaf"]


@pytest.fixture
def sim_modbus() -> Sim:
    return sim()


@pytest.fixture
def running(monkeypatch):
    short_retries(monkeypatch)
    started = Running()
    yield started
    started.stop_all()


def test_broker_outage_loses_nothing_and_keeps_order_and_times(own_broker, sim_modbus: Sim,
                                                               tmp_path, running):
    watcher = Watcher(own_broker.url, "ag-001", persistent=True)
    config = edge_config(tmp_path, own_broker.url, "ag-001",
                         [sim_modbus.driver(d, interval_s=0.2) for d in DEVICES])
    agent = Agent(config)
    produced: list[tuple[float, str, tuple]] = []  # (when, device, (metric, time, value))
    put = agent.queue.put

    def spy(device, readings):
        result = put(device, readings)
        produced.extend((time.time(), device, (r.metric, r.time_ms, r.value))
                        for r in readings)
        return result

    agent.queue.put = spy
    running(agent)
    watcher.wait(lambda: all(len(watcher.of(d)) >= 5 for d in DEVICES), 15, "flowing")

    own_broker.stop()
    outage_start = time.time()
    time.sleep(OUTAGE_S)
    queued = agent.queue.stats()
    outage_end = time.time()
    own_broker.start()

    def all_arrived() -> bool:
        return all(watcher.readings(d) >= {r for _, dev, r in produced if dev == d
                                           and outage_start <= _ < outage_end + 1}
                   for d in DEVICES)

    watcher.wait(all_arrived, 30, "the readings of the outage")
    agent.stop()
    watcher.close()

    during = [(dev, r) for when, dev, r in produced if outage_start < when < outage_end]
    assert len(during) > OUTAGE_S * 5 * len(DEVICES)  # ~5 polls/s of 3 devices, queued
    assert queued.depth >= len(during) - 20 and queued.dropped == 0
    for device in DEVICES:
        # everything the drivers produced, before, during and after the outage, arrived
        made = {r for _, dev, r in produced if dev == device}
        assert made <= watcher.readings(device)
        batches = first_copies(watcher.of(device))
        # in order: first arrivals of each seq come in seq order, with no seq missing ...
        assert [b.seq for b in batches] == list(range(len(batches)))
        # ... and carry the readings in time order, with their original timestamps
        times = [r.time_ms for b in batches for r in b.readings]
        assert times == sorted(times)
        outage_times = [t for t in times if outage_start * 1000 < t < outage_end * 1000]
        assert len(outage_times) >= OUTAGE_S * 4  # history, not "now"
        assert all(matches(sim_modbus, device, r) for b in batches for r in b.readings)
    assert watcher.rejected == []


_QUEUED = re.compile(r"(\S+): queued (.*)$")


def _produced(log: Path) -> set[tuple[str, str, int]]:
    """Every reading the agent's DEBUG log says was queued (logged after the commit)."""
    found = set()
    for line in log.read_text(errors="replace").splitlines():
        match = _QUEUED.search(line)
        if match:
            device, items = match.groups()
            for item in items.split():
                metric, _, time_ms = item.partition("@")
                if time_ms.isdigit():
                    found.add((device, metric, int(time_ms)))
    return found


def _start(config: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tidefield.edge", "run", "--config",
                                 str(config), "--log-level", "DEBUG"], stderr=out)


def test_kill_9_mid_stream_loses_nothing_produced_before_it(broker, sim_modbus: Sim,
                                                            tmp_path):
    watcher = Watcher(broker.url, "ag-001")
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "site": "ag-001", "broker": {"url": broker.url, "keepalive_s": 5},
        "queue": {"path": str(tmp_path / "queue.db")},
        # batches wait up to 0.4 s for readings: a kill always leaves some unsent
        "publish": {"batch_max_wait_s": 0.4, "batch_max_readings": 40},
        "health": {"interval_s": 0.5},
        "drivers": [sim_modbus.driver(d, interval_s=0.05) for d in DEVICES]}))
    log = tmp_path / "agent.log"
    agent = _start(config, log)
    try:
        watcher.wait(lambda: all(len(watcher.of(d)) >= 10 for d in DEVICES), 20,
                     "batches flowing")
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(10)
        before = _produced(log)
        arrived = lambda: {(d, m, t) for d in (*DEVICES, "ag-001-gw")  # noqa: E731
                           for m, t, _ in watcher.readings(d)}
        missing_at_kill = before - arrived()
        last_seq = {d: max(b.seq for b in watcher.of(d)) for d in DEVICES}
        # the broker noticed the dead connection: the gateway's last will
        watcher.wait(lambda: watcher.state("ag-001-gw") is DeviceState.OFFLINE, 10,
                     "the last will")

        restarted_ms = int(time.time() * 1000)
        agent = _start(config, log)
        watcher.wait(lambda: before <= arrived(), 20, "everything produced before the kill")
        watcher.wait(lambda: watcher.state("ag-001-gw") is DeviceState.ONLINE, 5, "a birth")
        watcher.wait(lambda: all(r.time_ms > restarted_ms for d in DEVICES
                                 for r in watcher.of(d)[-1].readings), 10, "new readings")
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(20) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        watcher.close()

    assert len(before) > 100
    assert missing_at_kill  # the kill left queued readings behind: the restart sent them
    assert before <= arrived()
    for device in DEVICES:
        copies: dict[int, set] = {}
        for batch in watcher.of(device):
            copies.setdefault(batch.seq, set()).add(batch.readings)
        # redelivery is allowed; a seq never stands for two different sets of readings
        assert all(len(versions) == 1 for versions in copies.values()), device
        assert max(copies) > last_seq[device]  # numbering went on after the restart
        assert sorted(copies) == list(range(len(copies)))
    assert watcher.rejected == []
    assert "Traceback" not in log.read_text()
