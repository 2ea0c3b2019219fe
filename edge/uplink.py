"""The only edge module that talks to the broker: queued readings out, PUBACKs and
receipts in.

One thread runs ``Publisher.run``. Each connection is a fresh MQTT v5 client (built by
``tidefield.protocol.mqtt``), driven by this thread's own ``loop()`` calls, so paho's
callbacks run here and nothing in it needs a lock:

1. Connect (clean start; TLS and username/password when configured), with the gateway's
   last will: ``offline``, retained, on its status topic. A failed attempt waits an
   exponentially growing, jittered delay (``RECONNECT_FIRST_S`` .. ``RECONNECT_MAX_S``);
   a broker that refuses our credentials is asked again only every ``REFUSED_RETRY_S``.
2. On CONNACK: a retained ``online`` birth for every device of the agent, then every
   batch handed out before and not acknowledged (after a reconnect or a restart), in
   seq order per device, then new batches. With a controller (``control.py``), the
   session is persistent (commands sent while the agent is away wait on the broker, up
   to ``control.session_expiry_s``), the agent subscribes to each device's ``down/#``,
   hands what arrives to the controller and publishes the controller's answers (QoS 1;
   one not acknowledged when the connection drops goes again on the next).
3. A device's readings become a batch when it has ``batch_max_readings`` of them or its
   oldest has waited ``batch_max_wait_s``. At most ``max_in_flight`` batches await their
   PUBACK (paho's ``on_publish`` with the message id), whose latency (publish to PUBACK)
   is recorded.
4. With receipts (``publish.receipts``, the default), a PUBACK only says that the broker
   has the batch, in its memory, which a broker that dies loses; the batch stays on disk
   until ingest's receipt (``tf/v1/{site}/{device}/down/receipt``, subscribed for every
   device on every connection) names its seq after ingest committed it. A batch with no
   receipt ``receipt_timeout_s`` after its PUBACK is sent again, the wait doubling with
   each send (jittered, up to ``RECEIPT_TIMEOUT_MAX_S``); ingest drops the repeat by its
   (device, seq) and receipts it again. At most ``max_unreceipted`` batches are out at
   once (their keys are held, not their readings); the rest waits on disk. On every
   connection everything handed out and not receipted is sent again first. Without
   receipts (an older server) the PUBACK is what deletes the batch, as before.
   Either way the deletion is in the transaction of the next batch taken, or within
   ``ACK_FLUSH_S``.
5. On stop (after the drivers stopped): what is queued is sent at once, ``offline`` for
   every device, a short wait for outstanding PUBACKs (and receipts), DISCONNECT.

Order: one connection delivers in order, batches are re-sent in seq order before any new
one, and a device's batches are cut from its readings in time order.
"""

from __future__ import annotations

import logging
import math
import queue as queue_module
import threading
import time
from collections import deque

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from tidefield.protocol import codec, control, mqtt
from tidefield.protocol.errors import ProtocolError
from tidefield.protocol.messages import Batch, DeviceState, Status
from tidefield.protocol.topics import (
    RECEIPT,
    down_topic,
    parse_topic,
    receipt_topic,
    status_topic,
    up_topic,
)

from .config import EdgeConfig
from .control import Controller, Outgoing
from .health import LatencyMeter
from .queue import DiskQueue
from .retry import backoff

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 60.0
REFUSED_RETRY_S = 300.0  # credentials refused: an operator has to act; do not hammer
IDLE_TICK_S = 0.2  # how often an idle connection looks for newly queued readings
STOP_DRAIN_S = 2.0  # on stop, how long to wait for outstanding PUBACKs
# Acknowledged batches are deleted with the next batch taken (one commit, not two), or
# after this long. A crash meanwhile re-sends them under their seq: the server drops them.
ACK_FLUSH_S = 1.0
RECEIPT_TIMEOUT_MAX_S = 600.0  # the longest wait for a receipt before sending again
RESEND_CHECK_S = 0.5  # how often batches past their receipt timeout are looked for

# CONNACK reasons that retrying soon will not fix (MQTT v5): client id not valid, bad user
# name or password, not authorized, banned, bad authentication method.
_REFUSALS = {0x85, 0x86, 0x87, 0x8A, 0x8C}


class _Session:
    """One connection: the client, what it reported, what awaits a PUBACK."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self.connack: paho.ReasonCode | None = None
        self.lost = False
        self.acks: list[tuple[int, paho.ReasonCode]] = []
        # mid -> (device, seq, readings, time sent); status messages are not in here
        self.in_flight: dict[int, tuple[str, int, int, float]] = {}
        self.status_mids: set[int] = set()
        self.receipts: list[mqtt.Message] = []
        # (device, seq) of batches to send again, before any new one
        self.resend: deque[tuple[str, int]] = deque()
        self.answers: dict[int, Outgoing] = {}  # the controller's, awaiting PUBACK
        self.received: list[mqtt.Message] = []  # down/config and down/command, for the controller
        self.subscribed: set[int] = set()  # mids of the subscriptions the broker acknowledged
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, userdata: object, flags: object,
                    reason_code: ReasonCode, properties: object) -> None:
        self.connack = reason_code

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object,
                       reason_code: ReasonCode, properties: object) -> None:
        self.lost = True

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int,
                      reason_codes: object, properties: object) -> None:
        self.subscribed.add(mid)

    def _on_publish(self, client: paho.Client, userdata: object, mid: int,
                    reason_code: ReasonCode, properties: object) -> None:
        self.acks.append((mid, reason_code))

    def _on_message(self, client: paho.Client, userdata: object,
                    message: paho.MQTTMessage) -> None:
        received = mqtt.to_message(message)
        if received.topic.endswith("/down/" + RECEIPT):
            self.receipts.append(received)
        else:
            self.received.append(received)

    def close(self) -> None:
        client = self.client
        try:
            if self.connack is not None and not self.connack.is_failure and not self.lost:
                client.disconnect()
        finally:
            sock = client.socket()
            if sock is not None:
                sock.close()
            # drop the callbacks: no cycle keeps the client (and its socket pair) alive
            client.on_connect = client.on_disconnect = client.on_publish = None
            client.on_message = None


class Publisher:
    def __init__(self, config: EdgeConfig, queue: DiskQueue,
                 latency: LatencyMeter | None = None,
                 controller: Controller | None = None) -> None:
        self._config = config
        self._controller = controller
        self._queue = queue
        self._site = config.site
        self._gateway = config.gateway_device
        self._devices = config.device_intervals()
        self._address = config.broker.address()
        self._content_type = codec.MSGPACK if config.broker.content_type == "msgpack" \
            else codec.JSON
        # JSON is what a message without a content type is; leaving it out saves paho
        # packing the property on every publish
        self._properties = (mqtt.publish_properties(self._content_type)
                            if self._content_type != codec.JSON else None)
        self._batch_max = config.publish.batch_max_readings
        self._max_wait_s = config.publish.batch_max_wait_s
        self._max_in_flight = config.publish.max_in_flight
        self._receipts = config.publish.receipts
        self._receipt_timeout_s = config.publish.receipt_timeout_s
        self._max_unreceipted = config.publish.max_unreceipted
        # PUBACKed, awaiting a receipt: (device, seq) -> when to send it again
        self._awaiting: dict[tuple[str, int], float] = {}
        self._sends: dict[tuple[str, int], int] = {}  # times sent, until receipted
        self._early: set[tuple[str, int]] = set()  # receipted before their PUBACK came
        self._resend_check_at = 0.0
        self.resent = 0  # batches sent again for want of a receipt (a counter)
        self.latency = latency or LatencyMeter()
        self.connected = threading.Event()
        # the session and mid of its configuration and command subscription (listening)
        self._listen: tuple[_Session, int | None] | None = None
        self._failures = 0
        self._down_since: float | None = None
        self._last_device = ""
        self._next_due_s = 0.0  # until the next device's readings are due
        self._acked: list[tuple[str, int]] = []  # acknowledged, not deleted yet
        self._acked_since = 0.0
        self._flush_requested = False  # a flush-queue command: send all, batches or not

    def request_flush(self) -> None:
        self._flush_requested = True

    def set_batching(self, max_readings: int | None, max_wait_s: float | None) -> None:
        """Batching from the platform's configuration (None: the config file's)."""
        publish = self._config.publish
        self._batch_max = max_readings or publish.batch_max_readings
        self._max_wait_s = max_wait_s if max_wait_s is not None else publish.batch_max_wait_s

    @property
    def unreceipted(self) -> int:
        """Batches the broker acknowledged that await ingest's receipt."""
        return len(self._awaiting)

    # --- the connection loop ------------------------------------------------------------

    def listening(self) -> bool:
        """Whether the broker has acknowledged this connection's subscription to the
        devices' configuration and commands: a command sent from now on reaches us."""
        listen = self._listen
        return listen is not None and not listen[0].lost and listen[1] in listen[0].subscribed

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; the body of the publisher thread."""
        while not stop.is_set():
            session, refused = self._connect(stop)
            if session is None:
                if stop.is_set():
                    break
                self._failures += 1
                delay = REFUSED_RETRY_S if refused else backoff(
                    self._failures, first=RECONNECT_FIRST_S, cap=RECONNECT_MAX_S)
                log.debug("next connection attempt to %s in %.1f s", self._address, delay)
                stop.wait(delay)
                continue
            if self._down_since is not None:
                log.info("connected to %s after %.0f s and %d failed attempts",
                         self._address, time.monotonic() - self._down_since, self._failures)
            self._failures = 0
            self._down_since = None
            self.connected.set()
            try:
                self._serve(session, stop)
                if stop.is_set():
                    self._finish(session)
            finally:
                self.connected.clear()
                self._settle(session)
                self.requeue_answers(session)
                session.close()
                self._flush_acks()
            if not stop.is_set():
                self._went_down("lost the connection")

    def _went_down(self, problem: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("broker %s: %s; readings stay queued, retrying with backoff "
                        "(up to %.0f s)", self._address, problem, RECONNECT_MAX_S)
        else:
            log.debug("broker %s: %s", self._address, problem)

    def _connect(self, stop: threading.Event) -> tuple[_Session | None, bool]:
        """A connected session, or (None, whether the broker refused us)."""
        config = self._config
        will = Status(self._site, self._gateway, DeviceState.OFFLINE, _now_ms())
        client = mqtt.new_client(
            config.client_id, self._address,
            will=(status_topic(self._site, self._gateway),
                  codec.encode_status(will, self._content_type), True),
            will_content_type=self._content_type)
        client.connect_timeout = config.broker.connect_timeout_s
        session = _Session(client)
        persistent = self._controller is not None and config.control.session_expiry_s > 0
        mqtt.connect(client, self._address, clean_start=not persistent,
                     session_expiry_s=config.control.session_expiry_s if persistent else 0,
                     keepalive=config.broker.keepalive_s)
        try:
            client.reconnect()  # TCP (and TLS) handshake, then CONNECT
            deadline = time.monotonic() + config.broker.connect_timeout_s
            while (session.connack is None and not session.lost and not stop.is_set()
                   and time.monotonic() < deadline):
                if client.loop(0.1) != paho.MQTT_ERR_SUCCESS:
                    break
        except (OSError, ValueError) as exc:  # refused, unreachable, TLS (ssl.SSLError)
            session.close()
            self._went_down(f"cannot connect: {exc}")
            return None, False
        reason = session.connack
        if reason is not None and not reason.is_failure and not session.lost:
            return session, False
        session.close()
        if reason is None:
            self._went_down("no CONNACK" if not stop.is_set() else "stopping")
            return None, False
        refused = reason.value in _REFUSALS
        if refused:
            self._down_since = self._down_since or time.monotonic()
            log.error("broker %s refused the connection: %s; check broker.username, "
                      "password and the broker's ACL; asking again in %.0f s",
                      self._address, reason, REFUSED_RETRY_S)
        else:
            self._went_down(f"connection refused: {reason}")
        return None, refused

    # --- a connected session ------------------------------------------------------------

    def _serve(self, session: _Session, stop: threading.Event) -> None:
        client = session.client
        now_ms = _now_ms()
        for device, interval_s in self._devices.items():
            birth = Status(self._site, device, DeviceState.ONLINE, now_ms,
                           max(1, math.ceil(interval_s)))
            self._publish_status(session, birth)
        if self._receipts:  # the queue may hold devices of an earlier config too
            devices = sorted({*self._devices, *self._queue.devices()})
            client.subscribe([(receipt_topic(self._site, device), 1) for device in devices])
            self._awaiting.clear()  # all of them are sent again, just below
            self._early.clear()
        if self._controller is not None:  # configuration and commands (not down/#, which
            # would deliver each receipt twice through the overlapping subscriptions)
            _, mid = client.subscribe(
                [(down_topic(self._site, device, channel), 1)
                 for device in self._devices for channel in (control.CONFIG, control.COMMAND)])
            self._listen = (session, mid)
        handed_out = self._queue.handed_out()
        session.resend.extend(handed_out)
        if self._receipts:  # forget the sends of batches the queue no longer holds
            holds = set(handed_out)
            self._sends = {key: n for key, n in self._sends.items() if key in holds}
        if session.resend:
            log.debug("re-sending %d unacknowledged batches", len(session.resend))
        while not stop.is_set() and not session.lost:
            self._settle(session)
            self._look_for_timeouts(session)
            self._exchange_control(session)
            while self._may_send(session) and not session.lost:
                batch = self._next_to_send(session, flush=self._flush_requested)
                if batch is None:
                    self._flush_requested = False
                    break
                self._send(session, batch)
            if session.lost:
                break
            if self._acked and time.monotonic() - self._acked_since >= ACK_FLUSH_S:
                self._flush_acks()
            if client.loop(self._wait_s(session)) != paho.MQTT_ERR_SUCCESS:
                session.lost = True
        self._settle(session)

    def _may_send(self, session: _Session) -> bool:
        if len(session.in_flight) >= self._max_in_flight:
            return False
        return (not self._receipts
                or len(session.in_flight) + len(self._awaiting) < self._max_unreceipted)

    def _next_to_send(self, session: _Session, *, flush: bool = False) -> Batch | None:
        """What is to be sent again first (what is left of it), then a new batch."""
        while session.resend:
            batch = self._queue.batch(*session.resend.popleft())
            if batch is not None:  # (None: deleted meanwhile, by a receipt or the policy)
                return batch
        return self._next_batch(flush=flush)

    def _look_for_timeouts(self, session: _Session) -> None:
        """Batches whose receipt is overdue go to be sent again."""
        now = time.monotonic()
        if not self._awaiting or now < self._resend_check_at:
            return
        self._resend_check_at = now + RESEND_CHECK_S
        due = [key for key, deadline in self._awaiting.items() if deadline <= now]
        for key in due:
            del self._awaiting[key]
        if due:
            log.info("no receipt for %d batches within their timeout; sending them again "
                     "(ingest keeps each once)", len(due))
            self.resent += len(due)
            session.resend.extend(sorted(due))

    def _exchange_control(self, session: _Session) -> None:
        """Hand received down/ messages to the controller; send its answers."""
        controller = self._controller
        if controller is None:
            return
        if session.received:
            for message in session.received:
                controller.submit(message)
            session.received.clear()
        while not session.lost and not controller.outbox.empty():  # (no exception per tick)
            try:
                answer = controller.outbox.get_nowait()
            except queue_module.Empty:
                return
            props = mqtt.publish_properties(control.CONTENT_TYPE,
                                            correlation_data=answer.correlation_data)
            info = session.client.publish(answer.topic, answer.payload, qos=1,
                                          retain=answer.retain, properties=props)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                controller.outbox.put(answer)
                session.lost = True
                return
            session.answers[info.mid] = answer

    def requeue_answers(self, session: _Session) -> None:
        """Answers the broker did not acknowledge go again on the next connection."""
        if self._controller is not None:
            for answer in session.answers.values():
                self._controller.outbox.put(answer)
        session.answers.clear()

    def _next_batch(self, *, flush: bool = False) -> Batch | None:
        """A batch of the next device (round robin) whose readings are due (with ``flush``:
        any device with readings waiting); None, and ``_next_due_s`` set, when none is."""
        now = time.monotonic()
        due = []
        next_due = IDLE_TICK_S
        for device, (count, since) in self._queue.pending().items():
            wait = since + self._max_wait_s - now
            if flush or count >= self._batch_max or wait <= 0:
                due.append(device)
            else:
                next_due = min(next_due, wait)
        if not due:
            self._next_due_s = next_due
            return None
        due.sort()
        device = next((d for d in due if d > self._last_device), due[0])
        self._last_device = device
        acked, self._acked = self._acked, []
        return self._queue.take(device, self._batch_max, ack=acked)

    def _wait_s(self, session: _Session) -> float:
        """How long the network loop may block: until a PUBACK arrives, until the next
        device's readings are due, or until acknowledged batches must be deleted."""
        wait = IDLE_TICK_S if not self._may_send(session) else self._next_due_s
        if self._acked:
            wait = min(wait, self._acked_since + ACK_FLUSH_S - time.monotonic())
        return max(wait, 0.0)

    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self._queue.ack(acked)

    def _send(self, session: _Session, batch: Batch) -> None:
        payload = codec.encode_batch(batch, self._content_type)
        info = session.client.publish(up_topic(batch.site, batch.device), payload, qos=1,
                                      properties=self._properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            session.lost = True  # stays handed out in the queue: sent again next session
            return
        session.in_flight[info.mid] = (batch.device, batch.seq, len(batch.readings),
                                       time.monotonic())
        if self._receipts:
            key = (batch.device, batch.seq)
            self._sends[key] = self._sends.get(key, 0) + 1

    def _publish_status(self, session: _Session, status: Status) -> None:
        info = session.client.publish(status_topic(status.site, status.device),
                                      codec.encode_status(status, self._content_type), qos=1,
                                      retain=True, properties=self._properties)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            session.status_mids.add(info.mid)
        else:
            session.lost = True

    def _settle(self, session: _Session) -> None:
        """Note what the server has, to be deleted from the queue: what a receipt names
        (with receipts), or what the broker acknowledged (without)."""
        if session.receipts:
            self._take_receipts(session)
        if not session.acks:
            return
        now = time.monotonic()
        done: list[tuple[str, int]] = []
        for mid, reason in session.acks:
            session.status_mids.discard(mid)
            session.answers.pop(mid, None)
            entry = session.in_flight.pop(mid, None)
            if entry is None:
                continue
            device, seq, _, sent = entry
            if reason.is_failure:
                log.warning("broker %s refused batch %s seq %d: %s; it stays queued and "
                            "goes again on the next connection", self._address, device, seq,
                            reason)
                session.lost = True
                continue
            self.latency.add(now - sent)
            key = (device, seq)
            if not self._receipts or key in self._early:
                self._early.discard(key)
                self._sends.pop(key, None)
                done.append(key)
            else:
                sends = self._sends.get(key, 1)
                self._awaiting[key] = now + backoff(sends, first=self._receipt_timeout_s,
                                                    cap=RECEIPT_TIMEOUT_MAX_S)
        session.acks.clear()
        self._note_done(done, now)

    def _note_done(self, done: list[tuple[str, int]], now: float) -> None:
        if done:
            if not self._acked:
                self._acked_since = now
            self._acked += done

    def _take_receipts(self, session: _Session) -> None:
        in_flight = {(device, seq) for device, seq, _, _ in session.in_flight.values()}
        done: list[tuple[str, int]] = []
        for message in session.receipts:
            try:
                receipt = codec.decode_receipt(message.payload, message.content_type,
                                               topic=parse_topic(message.topic))
            except ProtocolError as exc:  # not ours to fix: the batches are sent again
                log.warning("ignoring a receipt on %s: %s", message.topic, exc)
                continue
            for key in [k for k in self._awaiting
                        if k[0] == receipt.device and receipt.covers(k[1])]:
                del self._awaiting[key]
                self._sends.pop(key, None)
                done.append(key)
            self._early.update(k for k in in_flight
                               if k[0] == receipt.device and receipt.covers(k[1]))
            if session.resend:  # due to go again, but here is its receipt after all
                covered = [k for k in session.resend
                           if k[0] == receipt.device and receipt.covers(k[1])]
                if covered:
                    gone = set(covered)
                    session.resend = deque(k for k in session.resend if k not in gone)
                    for key in covered:
                        self._sends.pop(key, None)
                    done += covered
        session.receipts.clear()
        self._note_done(done, time.monotonic())

    def _finish(self, session: _Session) -> None:
        """Stopping (the drivers have stopped): send what is still queued without waiting
        for batches to fill, devices go offline, and outstanding PUBACKs get a moment.
        What does not make it in ``STOP_DRAIN_S`` stays on disk for the next start."""
        deadline = time.monotonic() + STOP_DRAIN_S
        while not session.lost and time.monotonic() < deadline:
            self._settle(session)
            self._exchange_control(session)  # answers too (a reboot's "done")
            while self._may_send(session) and not session.lost:
                batch = self._next_to_send(session, flush=True)
                if batch is None:
                    break
                self._send(session, batch)
            if not session.in_flight and not self._awaiting and not self._queue.pending():
                break
            if session.client.loop(0.05) != paho.MQTT_ERR_SUCCESS:
                session.lost = True
        now_ms = _now_ms()
        for device in self._devices:
            self._publish_status(session, Status(self._site, device, DeviceState.OFFLINE,
                                                 now_ms))
        deadline = time.monotonic() + STOP_DRAIN_S
        while ((session.in_flight or session.status_mids or session.answers)
               and not session.lost
               and time.monotonic() < deadline):
            if session.client.loop(0.05) != paho.MQTT_ERR_SUCCESS:
                break
            self._settle(session)


def _now_ms() -> int:
    return int(time.time() * 1000)
