"""A load generator that costs the machine little: MQTT v5 QoS 1 PUBLISH packets built
once, up front, into one buffer, then written to a plain socket in large slices by a
child process, which counts the broker's PUBACKs.

Why not paho: a paho publisher spends tens of microseconds of Python per message, on
the same 2 cores as the broker and the receivers it is meant to load, so it measured
itself (3,500 messages/s of 1 reading, 2026-12-05, and the bare subscriber "limit" was
the publisher's). Here a message costs the sender a slice of a prebuilt buffer; the
packet ids are fixed when the buffer is built (message i has id i mod 65535 + 1), which
is safe because the broker acknowledges one connection's QoS 1 messages in order and no
more than ``WINDOW`` are ever in flight.

The parent decides how far the child may go (``allowed``, in messages): offering more
than is stored, but only ``backlog`` messages more, so the broker's queue stays bounded
and the backlog can be drained at the end for the exactly-once check.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tidefield.server.ingest.consumer import mqtt_varint as varint  # the one MQTT length encoder

WINDOW = 20_000  # messages in flight (unacknowledged) at most; < 65535 packet ids
SLICE = 256 * 1024  # bytes written at once
ACK_WAIT_S = 2.0  # after stop, before DISCONNECT: for the last acknowledgements


def utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, keepalive_s: int = 60) -> bytes:
    # protocol name, version 5, flags: clean start; keepalive; no properties
    body = utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", keepalive_s) + b"\x00" \
        + utf8(client_id)
    return b"\x10" + varint(len(body)) + body


def publish_packet(topic: bytes, packet_id: int, properties: bytes, payload: bytes) -> bytes:
    body = topic + struct.pack("!H", packet_id) + varint(len(properties)) + properties \
        + payload
    return b"\x32" + varint(len(body)) + body  # PUBLISH, QoS 1


def content_type_property(content_type: str) -> bytes:
    return b"\x03" + utf8(content_type)


@dataclass
class Stream:
    """Every message's PUBLISH packet, back to back, and where each ends."""

    data: bytes
    ends: np.ndarray  # int64: data[ends[i - 1]:ends[i]] is message i
    readings: np.ndarray  # int64: readings in messages 0..i, cumulative

    @property
    def messages(self) -> int:
        return len(self.ends)


def build_stream(messages: Iterable[tuple[str, bytes, int]], content_type: str,
                 topic_prefix: str = "") -> Stream:
    """(topic, payload, readings) of each message, in the order they go out."""
    properties = content_type_property(content_type)
    parts: list[bytes] = []
    ends: list[int] = []
    readings: list[int] = []
    size = total = 0
    topics: dict[str, bytes] = {}
    for n, (topic, payload, count) in enumerate(messages):
        encoded_topic = topics.get(topic)
        if encoded_topic is None:
            encoded_topic = topics[topic] = utf8(topic_prefix + topic)
        packet = publish_packet(encoded_topic, n % 65535 + 1, properties, payload)
        parts.append(packet)
        size += len(packet)
        total += count
        ends.append(size)
        readings.append(total)
    return Stream(b"".join(parts), np.array(ends, dtype=np.int64),
                  np.array(readings, dtype=np.int64))


def _read_connack(sock: socket.socket) -> None:
    head = sock.recv(2)
    if len(head) < 2 or head[0] != 0x20:
        raise ConnectionError(f"expected CONNACK, got {head!r}")
    rest = b""
    while len(rest) < head[1]:  # (a CONNACK's remaining length fits one byte here)
        rest += sock.recv(head[1] - len(rest))
    if rest[1] != 0:
        raise ConnectionError(f"broker refused the connection: reason {rest[1]:#x}")


def _count_pubacks(data: bytes, carry: bytes) -> tuple[int, bytes]:
    """PUBACKs in ``carry + data``, and what is left of an incomplete one."""
    buffer = carry + data
    if len(buffer) % 4 == 0 and buffer[0::4].count(0x40) == len(buffer) // 4 \
            and buffer[1::4].count(2) == len(buffer) // 4:
        return len(buffer) // 4, b""  # the usual case: success, no reason code
    count, pos = 0, 0
    while pos + 2 <= len(buffer):  # the general case, packet by packet
        length, shift, header = 0, 0, pos + 1
        while header < len(buffer):
            byte = buffer[header]
            length |= (byte & 0x7F) << shift
            header += 1
            shift += 7
            if not byte & 0x80:
                break
        else:
            break
        if header + length > len(buffer):
            break
        if buffer[pos] & 0xF0 == 0x40:
            count += 1
        pos = header + length
    return count, buffer[pos:]


def _send_all(host: str, port: int, stream: Stream, allowed: multiprocessing.Value,
              acked: multiprocessing.Value, sent: multiprocessing.Value,
              stop: multiprocessing.Event) -> None:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"bench-raw-{time.monotonic_ns()}"))
    _read_connack(sock)
    sock.setblocking(False)
    view = memoryview(stream.data)
    sent_bytes = done = 0
    target = stream.messages  # on stop: the messages whose packets were started
    carry = b""
    give_up_at = float("inf")
    while done < target and time.monotonic() < give_up_at:
        if stop.is_set() and target == stream.messages:
            # finish the packet being written (a cut one would break the stream) and
            # send nothing after it; then wait a little for the acknowledgements
            target = int(np.searchsorted(stream.ends, sent_bytes, side="left")) + 1 \
                if sent_bytes else 0
            give_up_at = time.monotonic() + ACK_WAIT_S
        limit = min(target, allowed.value, done + WINDOW)
        end = int(stream.ends[limit - 1]) if limit else 0
        if sent_bytes < end:
            with contextlib.suppress(BlockingIOError):
                sent_bytes += sock.send(view[sent_bytes:min(end, sent_bytes + SLICE)])
            sent.value = int(np.searchsorted(stream.ends, sent_bytes, side="right"))
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            if sent_bytes >= end:
                time.sleep(0.001)  # nothing to send, nothing acknowledged yet
            continue
        if not data:
            raise ConnectionError("the broker closed the connection")
        count, carry = _count_pubacks(data, carry)
        done += count
        acked.value = done
    if target and sent_bytes < int(stream.ends[target - 1]):  # given up mid-packet
        sock.setblocking(True)
        sock.sendall(view[sent_bytes:int(stream.ends[target - 1])])
    if stop.is_set():
        sent.value = target
    # DISCONNECT, then read until the broker closes: closing with its PUBACKs unread
    # would reset the connection, and the broker would drop what it had not yet read
    sock.setblocking(True)
    sock.sendall(b"\xe0\x00")
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(120)
    while data := sock.recv(65536):
        count, carry = _count_pubacks(data, carry)
        done += count
        acked.value = done
    sock.close()


class RawPublisher:
    """Publishes a ``Stream`` from a child process; ``acked`` is how many messages the
    broker has acknowledged so far, ``allow(n)`` lets the child send up to message n."""

    def __init__(self, host: str, port: int, stream: Stream) -> None:
        context = multiprocessing.get_context("fork")  # the child shares the stream's pages
        self.stream = stream
        self._allowed = context.Value("q", 0, lock=False)
        self._acked = context.Value("q", 0, lock=False)
        self._sent = context.Value("q", 0, lock=False)
        self._stop = context.Event()
        self._process = context.Process(
            target=_send_all, args=(host, port, stream, self._allowed, self._acked,
                                    self._sent, self._stop), daemon=True)

    def start(self, allowed: int) -> None:
        self._allowed.value = allowed
        self._process.start()

    def allow(self, messages: int) -> None:
        self._allowed.value = max(self._allowed.value, min(messages, self.stream.messages))

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    @property
    def acked(self) -> int:
        return int(self._acked.value)

    @property
    def sent(self) -> int:
        """Messages written whole to the broker's socket (all of them, after ``stop``)."""
        return int(self._sent.value)

    def readings_in(self, messages: int) -> int:
        return int(self.stream.readings[messages - 1]) if messages else 0

    def wait(self, timeout: float) -> bool:
        """Until every message is acknowledged (True) or ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.acked < self.stream.messages and time.monotonic() < deadline:
            if not self._process.is_alive():
                break
            time.sleep(0.05)
        return self.acked >= self.stream.messages

    def stop(self) -> None:
        """Send nothing more; wait for the acknowledgements of what was sent."""
        self._stop.set()
        self._process.join(150)
        if self._process.is_alive():
            self._process.kill()
            raise RuntimeError(f"the publisher did not end: {self.acked:,} acknowledged")
        if self._process.exitcode:
            raise RuntimeError(f"the publisher failed (exit {self._process.exitcode}); "
                               f"{self.acked:,} acknowledged")
