"""The agent's driver threads and health readings, with stand-in drivers and no broker
(the publisher keeps retrying a closed port in the background)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from tidefield.edge import agent as agent_module
from tidefield.edge import uplink as publisher
from tidefield.edge.agent import Agent
from tidefield.edge.config import parse_config
from tidefield.edge.drivers import DRIVERS, DriverConfig, Fault
from tidefield.edge.errors import DeviceUnavailable, DriverUnusable
from tidefield.edge.health import CpuMeter, LatencyMeter, rss_mb
from tidefield.edge.retry import backoff
from tidefield.protocol.catalog import AGENT_METRICS
from tidefield.protocol.messages import Reading
from tidefield.server.embedded import free_port


@dataclass(frozen=True, kw_only=True)
class StandInConfig(DriverConfig):
    type: Literal["stand_in"] = "stand_in"
    behaviour: str = "ok"


class StandIn:
    """ok: one reading a poll; down: DeviceUnavailable; flaky: down for 3 polls, then ok;
    bug: an unexpected exception; unusable: DriverUnusable; garbage: a fault, no reading."""

    config_model = StandInConfig
    polls: ClassVar[dict[str, int]] = {}

    def __init__(self, config: StandInConfig, *, report) -> None:
        self.device_id = config.device
        self.interval_s = config.interval_s
        self._behaviour = config.behaviour
        self._report = report

    def poll(self) -> list[Reading]:
        n = StandIn.polls[self.device_id] = StandIn.polls.get(self.device_id, 0) + 1
        behaviour = self._behaviour
        if behaviour == "flaky":
            behaviour = "down" if n <= 3 else "ok"
        if behaviour == "down":
            raise DeviceUnavailable("no answer from unit 7", self.device_id)
        if behaviour == "bug":
            raise ZeroDivisionError("a driver bug")
        if behaviour == "unusable":
            raise DriverUnusable("needs a library this machine lacks", self.device_id)
        if behaviour == "garbage":
            self._report(Fault(self.device_id, "soil_ec", "invalid", "register 2 holds 0xffff"))
            return []
        return [Reading("soil_ec", int(time.time() * 1000), 0.5)]

    def close(self) -> None:
        pass


@pytest.fixture
def make_agent(tmp_path, monkeypatch):
    monkeypatch.setitem(DRIVERS, "stand_in", StandIn)
    monkeypatch.setattr(agent_module, "DRIVER_BACKOFF_FIRST_S", 0.05)
    monkeypatch.setattr(agent_module, "DRIVER_BACKOFF_MAX_S", 0.2)
    monkeypatch.setattr(publisher, "RECONNECT_FIRST_S", 0.5)
    StandIn.polls = {}
    agents = []

    def make(behaviours: dict[str, str], **health) -> Agent:
        config = parse_config({"site": "ag-001", "queue": {"path": str(tmp_path / "q.db")},
                               "broker": {"url": f"mqtt://127.0.0.1:{free_port()}"},
                               "health": health or {"interval_s": 3600}})
        agent = Agent(config)
        agent._runners = [agent_module._DriverRunner(
            StandInConfig(device=device, interval_s=0.02, behaviour=behaviour), agent.queue,
            agent._stop_producers) for device, behaviour in behaviours.items()]
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if not agent._stop.is_set():
            agent.stop()


def _status(agent: Agent) -> dict:
    return {s.device_id: s for s in agent.drivers}


def test_a_failing_driver_backs_off_with_one_warning_and_the_others_keep_polling(
        make_agent, caplog):
    caplog.set_level(logging.DEBUG, logger="tidefield.edge")
    agent = make_agent({"ag-001-soil": "ok", "ag-001-wx": "down", "ag-001-leaf": "bug"})
    agent.start()
    time.sleep(1.0)
    agent.stop()
    status = _status(agent)
    assert status["ag-001-soil"].readings >= 20 and status["ag-001-soil"].failures == 0
    for device in ("ag-001-wx", "ag-001-leaf"):
        assert status[device].failures >= 3
        # backoff: far fewer tries than the 50 a 20 ms interval would make in a second
        assert status[device].failures < 15
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and r.getMessage().startswith(f"{device}: poll failed")]
        assert len(warnings) == 1, warnings
        assert "retrying in" in warnings[0].getMessage()
        assert "backing off up to 0 s" in warnings[0].getMessage()  # DRIVER_BACKOFF_MAX_S
    bug = next(r for r in caplog.records if r.getMessage().startswith("ag-001-leaf: poll"))
    assert bug.exc_info is not None  # an unexpected error comes with its traceback


def test_a_driver_that_comes_back_is_polled_again(make_agent, caplog):
    caplog.set_level(logging.INFO, logger="tidefield.edge")
    agent = make_agent({"ag-001-soil": "flaky"})
    agent.start()
    deadline = time.monotonic() + 5
    while _status(agent)["ag-001-soil"].readings < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    agent.stop()
    status = _status(agent)["ag-001-soil"]
    assert status.readings >= 3 and status.failures == 0 and status.last_error is None
    assert any("polling again after 3 failed polls" in r.getMessage() for r in caplog.records)


def test_an_unusable_driver_stops_alone(make_agent, caplog):
    agent = make_agent({"ag-001-soil": "ok", "ag-001-wx": "unusable"})
    agent.start()
    time.sleep(0.3)
    status = _status(agent)
    assert status["ag-001-wx"].stopped and StandIn.polls["ag-001-wx"] == 1
    assert status["ag-001-soil"].readings > 5
    agent.stop()
    assert any(r.levelno == logging.ERROR and "ag-001-wx: driver stopped" in r.getMessage()
               for r in caplog.records)


def test_garbage_is_reported_once_and_not_queued(make_agent, caplog):
    agent = make_agent({"ag-001-soil": "garbage"})
    agent.start()
    time.sleep(0.3)
    depth = agent.queue.stats().depth
    agent.stop()
    status = _status(agent)["ag-001-soil"]
    assert depth == 0 and status.fault_count > 5
    assert set(status.faults) == {"soil_ec"} and status.failures == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.getMessage().startswith("ag-001-soil soil_ec")]
    assert warnings == ["ag-001-soil soil_ec: register 2 holds 0xffff (invalid); not queued"]


def test_health_readings_are_the_agent_metrics_of_the_gateway(make_agent):
    agent = make_agent({"ag-001-soil": "ok"}, interval_s=0.2)
    agent.latency.add(0.012)
    agent.start()
    time.sleep(0.5)
    pending = agent.queue.pending()
    agent.stop()
    assert "ag-001-gw" in pending  # queued like any device's readings
    agent = make_agent({})
    readings = {r.metric: r.value for r in agent.health_readings()}
    assert set(readings) == set(AGENT_METRICS) - {"agent_publish_latency"}  # none acked
    assert readings["agent_queue_depth"] > 0 and readings["agent_dropped"] == 0
    assert 5 < readings["agent_rss"] < 2000 and readings["agent_cpu"] >= 0


def test_health_meters():
    latency = LatencyMeter()
    assert latency.mean_ms() is None
    latency.add(0.010)
    latency.add(0.030)
    assert latency.mean_ms() == pytest.approx(20.0)
    assert latency.mean_ms() is None  # each interval starts afresh
    cpu = CpuMeter()
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        pass
    # one busy thread is at most one core (less when this shared machine is loaded)
    assert 5 < cpu.percent() <= 110
    assert rss_mb() > 5


def test_backoff_doubles_with_jitter_up_to_its_cap():
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (60, 30.0)]:
        delays = [backoff(attempt, first=1.0, cap=30.0) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not in lockstep


def test_stop_does_not_wait_for_a_long_poll_interval(make_agent):
    agent = make_agent({"ag-001-soil": "ok"})
    agent._runners[0].config = StandInConfig(device="ag-001-soil", interval_s=3600)
    agent.start()
    time.sleep(0.1)
    started = time.monotonic()
    agent.stop()
    assert time.monotonic() - started < 3
    assert not any(t.is_alive() for t in agent._threads if t.name != "publisher")
    assert threading.active_count() < 50
