"""Back to the field, end to end: PostgreSQL+TimescaleDB -> the control service -> real
Mosquitto -> the edge agent -> firmware-sim's Modbus emulator (sensors and a relay board
whose aerator raises the emulated dissolved oxygen), and the answers back."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from tidefield.edge.agent import Agent
from tidefield.protocol import control, mqtt
from tidefield.protocol.control import Action, Command
from tidefield.protocol.registry import load_sites
from tidefield.server.control import store
from tidefield.server.control.service import ControlService
from tidefield.server.embedded import free_port
from tidefield.sim.actuators import ActuatorBoard, Effect
from tidefield.sim.fleet import Fleet
from tidefield.sim.modbus import emulated_devices, start_modbus_server

from .test_edge_agent import Watcher, edge_config, short_retries
from .test_edge_modbus import float_registers

SITE, GATEWAY, SONDE = "oc-001", "oc-001-gw", "oc-001-sonde"
BOARD_UNIT = 200
SONDE_METRICS = ("water_temperature", "salinity", "dissolved_oxygen", "water_ph", "turbidity",
                 "chlorophyll_a")


@pytest.fixture(scope="module")
def emulator():
    fleet = Fleet([s for s in load_sites() if s.id == SITE], seed=3)
    units = emulated_devices(fleet)
    # 60x time: the aerator's 15-minute time constant passes in 15 s. Oxygen injection
    # (efficiency 1.5), so that DO rises in any season.
    board = ActuatorBoard(BOARD_UNIT, {0: Effect("aerator", SONDE, efficiency=1.5)},
                          time_scale=60.0)
    handle = start_modbus_server("127.0.0.1", free_port(), units, boards=[board])
    unit_of = {u.device_id: n for n, u in units.items()}
    yield handle, board, unit_of
    handle.stop()


@pytest.fixture
def broker(own_broker):
    """A broker per test: retained configuration must not leak from one to the next."""
    return own_broker


@pytest.fixture
def service(db_url, broker):
    running = ControlService(db_url, mqtt.parse_mqtt_url(broker.url),
                             client_id=f"control-{uuid.uuid4().hex[:8]}", poll_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    assert running.connected.wait(10)
    yield running
    stop.set()
    thread.join(10)


class Agents:
    """Agents of one site sharing one state folder (a restart keeps its disk)."""

    def __init__(self, tmp_path, broker_url: str, emulator, **actuator) -> None:
        handle, _, unit_of = emulator
        self.config = edge_config(
            tmp_path, broker_url, SITE,
            [{"type": "modbus_tcp", "device": SONDE, "host": "127.0.0.1", "port": handle.port,
              "unit": unit_of[SONDE], "interval_s": 0.25, "timeout_s": 2.0,
              "registers": float_registers(SONDE_METRICS)}],
            actuators=[{"name": "aerator", "type": "modbus_tcp", "host": "127.0.0.1",
                        "port": handle.port, "unit": BOARD_UNIT, "coil": 0,
                        **actuator}],
            broker={"client_id": f"agent-{uuid.uuid4().hex[:8]}"})
        self.current: Agent | None = None

    def start(self) -> Agent:
        self.current = Agent(self.config)
        self.current.start()
        assert self.current.publisher.connected.wait(10)
        # commands published before the agent's subscription is acknowledged are dropped
        # by the broker (a new session): wait for it, as an operator's command would
        wait_for(self.current.publisher.listening, 10, "the agent's command subscription")
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


@pytest.fixture
def agents(tmp_path, broker, emulator, monkeypatch):
    short_retries(monkeypatch)
    made: list[Agents] = []

    def make(broker_url: str | None = None, **actuator) -> Agents:
        made.append(Agents(tmp_path, broker_url or broker.url, emulator, **actuator))
        return made[-1]

    yield make
    for group in made:
        group.stop()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _twin(url: str, device: str) -> store.Twin:
    with psycopg.connect(url) as conn:
        return store.twin(conn, device_id=device)


def _command(url: str, command_id: str) -> store.CommandRow:
    with psycopg.connect(url) as conn:
        row = store.command(conn, command_id=command_id)
    assert row is not None
    return row


def _send(url: str, device: str, action: str, expires_in_s: float = 60, **params
          ) -> str:
    with psycopg.connect(url) as conn:
        return store.create_command(conn, device_id=device, action=action, params=params,
                                    actor="test", expires_in_s=expires_in_s).id


def test_a_configuration_made_while_offline_reaches_the_agent_and_the_versions_match(
        db_url, service, agents):
    group = agents()
    group.start()
    wait_for(lambda: _twin(db_url, SONDE).reported_version == 0, 15, "version 0 reported")
    group.stop()  # offline now
    with psycopg.connect(db_url) as conn:
        store.set_desired(conn, device_id=SONDE, settings={"interval_s": 5.0}, actor="test")
        store.set_desired(conn, device_id=SONDE, settings={
            "interval_s": 2.0, "metrics": ["dissolved_oxygen", "water_temperature"]},
            actor="test")
    wait_for(lambda: _twin(db_url, SONDE).published_version == 2, 15, "version 2 published")
    agent = group.start()
    twin = wait_for(lambda: (t := _twin(db_url, SONDE)).reported_version == 2 and t, 20,
                    "version 2 reported")
    assert twin.in_sync and twin.difference() == {}
    assert twin.reported == {"interval_s": 2.0,
                             "metrics": ["dissolved_oxygen", "water_temperature"]}
    runner = agent._runners[0]
    assert runner.interval_s == 2.0
    assert runner.metrics == {"dissolved_oxygen", "water_temperature"}
    # an old version arriving late (a stale retained copy) changes nothing
    stale = control.DesiredConfig(SITE, SONDE, 1, control.Settings(interval_s=5.0), 1)
    agent.controller.submit(mqtt.Message(control.config_topic(SITE, SONDE),
                                         control.encode_desired(stale), None, 1, True, 0))
    time.sleep(1.0)
    assert runner.interval_s == 2.0 and _twin(db_url, SONDE).reported_version == 2
    # and a restart keeps what was applied (from disk) without asking again
    group.stop()
    agent = group.start()
    assert agent._runners[0].interval_s == 2.0


def test_a_refused_configuration_keeps_the_previous_version_and_says_why(
        db_url, service, agents):
    group = agents()
    group.start()
    with psycopg.connect(db_url) as conn:
        store.set_desired(conn, device_id=SONDE, settings={"metrics": ["soil_moisture"]},
                          actor="test")
    twin = wait_for(lambda: (t := _twin(db_url, SONDE)).reported_error and t, 20,
                    "the refusal")
    assert twin.reported_version == 0 and "soil_moisture" in twin.reported_error
    assert not twin.in_sync


def test_an_aerator_command_raises_the_emulated_oxygen(db_url, broker, service, agents,
                                                       emulator):
    _, board, _ = emulator
    watcher = Watcher(broker.url, SITE)
    try:
        group = agents()
        group.start()
        wait_for(lambda: len(_oxygen(watcher)) >= 8, 20, "oxygen readings")
        before = max(v for _, v in _oxygen(watcher))
        started_ms = int(time.time() * 1000)
        command_id = _send(db_url, GATEWAY, "set", actuator="aerator", state="on",
                           duration_s=600)
        row = wait_for(lambda: (r := _command(db_url, command_id)).state == "done" and r, 20,
                       "the command done")
        assert row.delivered_at is not None and row.value == 1.0
        assert board.states()[0] is True
        # 6 s of a 15 s time constant: about a third of the way to 1.5 x saturation
        time.sleep(6)
        after = [v for t, v in _oxygen(watcher) if t > started_ms + 4000]
        assert after and max(after) > before + 0.5, (before, after)
        off = _send(db_url, GATEWAY, "set", actuator="aerator", state="off")
        wait_for(lambda: _command(db_url, off).state == "done", 20, "the aerator off")
        assert board.states()[0] is False
        read = _send(db_url, GATEWAY, "read", actuator="aerator")
        assert wait_for(lambda: (r := _command(db_url, read)).state == "done" and r, 20,
                        "read").value == 0.0
        wrong = _send(db_url, GATEWAY, "set", actuator="heater", state="on")
        failed = wait_for(lambda: (r := _command(db_url, wrong)).state == "failed" and r, 20,
                          "an unknown actuator refused")
        assert "no actuator 'heater'" in failed.reason
    finally:
        watcher.close()


def _oxygen(watcher: Watcher) -> list[tuple[int, float]]:
    return sorted((t, v) for m, t, v in watcher.readings(SONDE) if m == "dissolved_oxygen")


def test_a_command_that_expired_while_the_agent_was_offline_does_not_run(
        db_url, broker, service, agents, emulator):
    _, board, _ = emulator
    group = agents()
    group.start()
    group.stop()  # its session (and subscriptions) stay on the broker
    # through the platform: the broker drops it at its message expiry, the service
    # marks it expired
    through_service = _send(db_url, GATEWAY, "set", expires_in_s=2, actuator="aerator",
                            state="on")
    wait_for(lambda: _command(db_url, through_service).state == "sent", 10, "sent")
    # and one the broker would still deliver (no MQTT expiry, as a broker without it, or
    # one whose clock differs, would): the agent itself refuses it
    stale_id = f"cmd-stale-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    answers = _Answers(broker.url)
    try:
        _publish(broker.url, Command(SITE, GATEWAY, stale_id, Action.SET, now - 60_000,
                                     now + 1500, actuator="aerator", state="on"))
        time.sleep(3)  # both expire while the agent is away
        switched_on = board.switched_on
        agent = group.start()
        answer = answers.wait(stale_id, control.CommandState.EXPIRED)
        assert "after its expiry" in answer.reason
        wait_for(lambda: _command(db_url, through_service).state == "expired", 15,
                 "expired in the database")
        time.sleep(1)
        assert board.switched_on == switched_on and board.states()[0] is False
        assert agent.controller.executed == []
    finally:
        answers.close()


def test_a_redelivered_command_runs_once_even_across_a_restart(broker, agents, emulator):
    _, board, _ = emulator
    group = agents()
    group.start()
    answers = _Answers(broker.url)
    try:
        now = int(time.time() * 1000)
        command = Command(SITE, GATEWAY, f"cmd-once-{uuid.uuid4().hex[:8]}", Action.SET,
                          now, now + 60_000, actuator="aerator", state="on", duration_s=30)
        writes = board.writes
        _publish(broker.url, command)
        answers.wait(command.id, control.CommandState.DONE)
        assert board.writes == writes + 1
        _publish(broker.url, command)  # the same id again, as a re-delivery
        answers.wait(command.id, control.CommandState.DONE, count=2)
        group.stop()
        group.start()  # (its fail-safe write happens here)
        after_restart = board.writes
        _publish(broker.url, command)
        answers.wait(command.id, control.CommandState.DONE, count=3)
        time.sleep(0.5)
        assert board.writes == after_restart
        assert group.current.controller.executed == []
    finally:
        answers.close()


def test_the_fail_safe_state_is_written_at_start(broker, agents, emulator):
    _, board, _ = emulator
    board.switch(0, True, int(time.time() * 1000))  # left on by a crashed agent
    group = agents(fail_safe="off")
    group.start()
    wait_for(lambda: board.states()[0] is False, 5, "the fail-safe state")


def test_the_on_time_limit_holds_when_the_broker_is_unreachable(broker, agents, emulator):
    _, board, _ = emulator
    group = agents(max_on_s=2.0)
    group.start()
    answers = _Answers(broker.url)
    now = int(time.time() * 1000)
    command = Command(SITE, GATEWAY, f"cmd-long-{uuid.uuid4().hex[:8]}", Action.SET, now,
                      now + 60_000, actuator="aerator", state="on", duration_s=3600)
    _publish(broker.url, command)
    answers.wait(command.id, control.CommandState.DONE)
    answers.close()
    assert board.states()[0] is True
    switched_on = time.monotonic()
    broker.stop()  # the network is gone
    wait_for(lambda: board.states()[0] is False, 10, "the aerator off at max_on_s")
    assert 1.5 <= time.monotonic() - switched_on + 0.5 <= 8
    assert group.current.publisher.connected.is_set() is False


def test_a_device_refuses_another_devices_command(broker, agents):
    group = agents()
    agent = group.start()
    now = int(time.time() * 1000)
    wrong = Command(SITE, "oc-001-sonde", f"cmd-other-{uuid.uuid4().hex[:8]}", Action.REBOOT,
                    now, now + 60_000)
    # published on the gateway's topic: the identity check refuses it, nothing runs
    agent.controller.submit(mqtt.Message(control.command_topic(SITE, GATEWAY),
                                         control.encode_command(wrong), None, 1, False, 0))
    time.sleep(0.5)
    assert agent.controller.executed == [] and not agent.reboot_requested.is_set()


# --- a plain client, as the platform's would be -------------------------------------------


def _publish(url: str, command: Command) -> None:
    address = mqtt.parse_mqtt_url(url)
    client = mqtt.new_client(f"test-pub-{uuid.uuid4().hex[:8]}", address)
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        props = mqtt.publish_properties(
            control.CONTENT_TYPE,
            response_topic=control.result_topic(command.site, command.device),
            correlation_data=command.id.encode())
        info = client.publish(control.command_topic(command.site, command.device),
                              control.encode_command(command), qos=1, properties=props)
        info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


class _Answers:
    """Command results on the site's reply/command topics."""

    def __init__(self, url: str) -> None:
        self.results: list[control.CommandResult] = []
        self.correlations: list[bytes | None] = []
        subscribed = threading.Event()
        self.client = mqtt.new_client(f"test-answers-{uuid.uuid4().hex[:8]}",
                                      mqtt.parse_mqtt_url(url))
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(f"tf/v1/{SITE}/+/reply/command", 1)
        address = mqtt.parse_mqtt_url(url)
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, message) -> None:
        msg = mqtt.to_message(message)
        self.results.append(control.decode_result(msg.payload))
        self.correlations.append(msg.correlation_data)

    def wait(self, command_id: str, state, count: int = 1) -> control.CommandResult:
        def found():
            hits = [r for r in list(self.results) if r.id == command_id and r.state is state]
            return hits[-1] if len(hits) >= count else None
        result = wait_for(found, 20, f"{command_id} {state} x{count}")
        assert command_id.encode() in self.correlations  # the correlation data echoed
        return result

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
