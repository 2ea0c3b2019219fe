"""The control service: the platform's one connection that talks *to* devices.

Every ``POLL_S`` (sooner when an answer arrives) it

1. publishes each desired configuration version not yet published, retained, at QoS 1, on
   the device's ``down/config`` (a device that is offline gets the newest when it comes
   back: the broker keeps only the last retained message, and the device applies only a
   newer version than its own);
2. sends each pending command on ``down/command`` at QoS 1 with the MQTT v5 response
   topic (the device's ``reply/command``), correlation data (the id) and a message expiry
   equal to the time the command has left, so the broker drops it once it expired;
3. expires commands nobody received before their expiry;
4. stores what devices answered on ``reply/#`` (reported configuration, command results).

paho stays in this module. Its network thread only queues the messages it receives; the
service's own thread decodes them and writes the database, so a slow database never
holds up the broker connection. A malformed answer is logged once with its topic and
reason and set aside; no answer can stop the loop. The session is persistent (a fixed
client id and a session expiry): answers sent while the service was down wait for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING

import psycopg

from tidefield.protocol import control, mqtt
from tidefield.protocol.errors import ProtocolError
from tidefield.protocol.topics import ALL_REPLIES, Channel, parse_topic

from . import store

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

POLL_S = 1.0
ACK_TIMEOUT_S = 10.0
DB_RETRY_INITIAL_S = 0.5  # the database restarting under `tidefield up`: back within seconds
DB_RETRY_MAX_S = 5.0
SESSION_EXPIRY_S = 7 * 86_400
CLIENT_ID = "tidefield-control"


class ControlService:
    def __init__(self, database_url: str, address: mqtt.BrokerAddress, *,
                 client_id: str = CLIENT_ID, poll_s: float = POLL_S) -> None:
        self.database_url = database_url
        self.address = address
        self.poll_s = poll_s
        self.received: queue.Queue[mqtt.Message] = queue.Queue()
        self.connected = threading.Event()
        self._wake = threading.Event()  # an answer arrived: handle it now, not next poll
        self.stats = {"configs_published": 0, "commands_sent": 0, "answers": 0,
                      "refused_answers": 0, "expired": 0}
        self._client = mqtt.new_client(client_id, address)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 30)

    # --- paho callbacks (network thread) -------------------------------------------------

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: ReasonCode, properties: object) -> None:
        if reason_code.is_failure:
            log.warning("broker %s refused the control service: %s", self.address,
                        reason_code)
            return
        client.subscribe(ALL_REPLIES, qos=1)  # again on every connect
        self.connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object,
                       reason_code: ReasonCode, properties: object) -> None:
        self.connected.clear()

    def _on_message(self, client: paho.Client, userdata: object,
                    message: paho.MQTTMessage) -> None:
        self.received.put(mqtt.to_message(message))
        self._wake.set()

    # --- the service's thread ----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        mqtt.connect(self._client, self.address, clean_start=False,
                     session_expiry_s=SESSION_EXPIRY_S)
        self._client.loop_start()
        try:
            delay = DB_RETRY_INITIAL_S
            while not stop.is_set():
                try:
                    self._serve(stop)
                except psycopg.OperationalError as exc:
                    # the database restarts (or is not up yet): answers wait in the queue,
                    # commands in the table; nothing is lost by waiting for it
                    log.warning("database unavailable, retrying",
                                extra={"error": str(exc).strip().splitlines()[0]
                                       if str(exc).strip() else "", "retry_in_s": delay})
                    stop.wait(delay)
                    delay = min(delay * 2, DB_RETRY_MAX_S)
                else:
                    delay = DB_RETRY_INITIAL_S
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _serve(self, stop: threading.Event) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    self.step(conn)
                except psycopg.OperationalError:
                    raise  # the connection is gone: run() reconnects
                except Exception:  # one bad row must not end the service
                    log.exception("control step failed; trying again")
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def step(self, conn: psycopg.Connection) -> None:
        self._handle_answers(conn)
        self.stats["expired"] += store.expire_overdue(conn)
        if not self.connected.is_set():
            return
        for site, device, version, settings in store.unpublished_configs(conn):
            desired = control.DesiredConfig(site, device, version, settings, _now_ms())
            if self._publish(control.config_topic(site, device),
                             control.encode_desired(desired), retain=True):
                store.mark_published(conn, device_id=device, version=version)
                self.stats["configs_published"] += 1
        for row in store.pending_commands(conn):
            command = row.to_command()
            left_s = (command.expires_ms - _now_ms()) // 1000
            if left_s < 1:
                continue  # expire_overdue takes it next step
            props = mqtt.publish_properties(
                control.CONTENT_TYPE, int(left_s),
                response_topic=control.result_topic(command.site, command.device),
                correlation_data=command.id.encode())
            if self._publish(control.command_topic(command.site, command.device),
                             control.encode_command(command), properties=props):
                store.mark_sent(conn, command_id=command.id)
                self.stats["commands_sent"] += 1

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False,
                 properties: object = None) -> bool:
        """Publish at QoS 1 and wait for the PUBACK; False when none came."""
        props = properties or mqtt.publish_properties(control.CONTENT_TYPE)
        info = self._client.publish(topic, payload, qos=1, retain=retain,
                                    properties=props)  # type: ignore[arg-type]
        if info.rc != 0:
            return False
        try:
            info.wait_for_publish(ACK_TIMEOUT_S)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def _handle_answers(self, conn: psycopg.Connection) -> None:
        while True:
            try:
                message = self.received.get_nowait()
            except queue.Empty:
                return
            self.stats["answers"] += 1
            try:
                topic = parse_topic(message.topic)
                if topic.channel is not Channel.REPLY:
                    raise ProtocolError(f"not an answer topic: {message.topic}")
                if topic.rest == control.CONFIG:
                    store.record_reported(conn, reported=control.decode_reported(
                        message.payload, topic=topic))
                elif topic.rest == control.COMMAND:
                    result = control.decode_result(message.payload, topic=topic)
                    if not store.record_result(conn, result=result):
                        log.info("answer to command %s (%s) from %s does not apply: "
                                 "unknown, another device's, or finished", result.id,
                                 result.state, result.device)
                else:
                    raise ProtocolError(f"no such answer: reply/{topic.rest}")
            except ProtocolError as exc:
                self.stats["refused_answers"] += 1
                log.warning("refused an answer on %s: %s (%s)", message.topic, exc.message,
                            exc.reason)


def _now_ms() -> int:
    return int(time.time() * 1000)
