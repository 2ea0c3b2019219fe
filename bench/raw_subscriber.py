"""A subscriber that costs the machine little: the broker's own delivery limit at QoS 1.

Why not paho: a paho subscriber, even one that only counts, spends 56 to 77 us of Python
a message (2026-12-05), so the "bare subscriber" limit of bench/ingest.py was paho's, not
Mosquitto's. This one, in a child process, speaks MQTT v5 over a plain socket: CONNECT,
SUBSCRIBE at QoS 1, then reads the socket a megabyte at a time, walks the PUBLISH packets
in that buffer (fixed header, length, packet id; the payload is never copied out) and
answers a whole read's packet ids with one write of PUBACKs. Its own CPU per message is
counted, so what is left of a message's cost is the broker's.

Several of them, each subscribed to everything, show what the broker pays to send every
message to every subscriber (what N ingest workers with a normal subscription cost it).
"""

from __future__ import annotations

import multiprocessing
import socket
import struct
import time
from dataclasses import dataclass

from bench.raw_publisher import utf8, varint

RECEIVE_BYTES = 1 << 20
_PUBACK = struct.Struct("!BBH")  # v5 PUBACK, success: no reason code, no properties


def connect_packet(client_id: str, receive_maximum: int, keepalive_s: int = 60) -> bytes:
    # v5, clean start, no session kept; Receive Maximum as ingest's workers ask (bounds
    # what the broker has in flight to us, as it does for them)
    properties = b"\x21" + struct.pack("!H", receive_maximum)
    body = utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", keepalive_s) \
        + varint(len(properties)) + properties + utf8(client_id)
    return b"\x10" + varint(len(body)) + body


def subscribe_packet(topic_filter: str, packet_id: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"\x00" + utf8(topic_filter) + b"\x01"  # QoS 1
    return b"\x82" + varint(len(body)) + body


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One whole packet (blocking): its first byte and its body."""
    first = sock.recv(1)
    if not first:
        raise ConnectionError("the broker closed the connection")
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        body += chunk
    return first[0], body


def walk(buffer: bytes) -> tuple[int, list[int], int]:
    """Whole packets at the start of ``buffer``: how many PUBLISH packets, the packet ids
    of those at QoS 1 or 2, and where the first incomplete packet starts."""
    publishes, mids = 0, []
    pos, size = 0, len(buffer)
    while pos + 2 <= size:
        length, shift, at = 0, 0, pos + 1
        while at < size:
            byte = buffer[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            break  # the length itself is cut
        end = at + length
        if end > size:
            break
        command = buffer[pos]
        if command & 0xF0 == 0x30:
            publishes += 1
            if command & 0x06:
                topic_end = at + 2 + ((buffer[at] << 8) | buffer[at + 1])
                mids.append((buffer[topic_end] << 8) | buffer[topic_end + 1])
        pos = end
    return publishes, mids, pos


def _receive(host: str, port: int, topic_filter: str, client_id: str, expected: int,
             receive_maximum: int, ready: multiprocessing.Event,
             counts: multiprocessing.Array) -> None:
    """counts: messages, first read (s), last (s), own CPU (s) between them."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(client_id, receive_maximum))
    command, body = _read_packet(sock)
    if command != 0x20 or body[1] != 0:
        raise ConnectionError(f"broker refused the connection: {command:#x} {body!r}")
    sock.sendall(subscribe_packet(topic_filter))
    command, body = _read_packet(sock)
    if command != 0x90 or body[-1] > 1:
        raise ConnectionError(f"broker refused the subscription: {command:#x} {body!r}")
    ready.set()
    received, carry = 0, b""
    first_cpu = 0.0
    while received < expected:
        data = sock.recv(RECEIVE_BYTES)
        if not data:
            raise ConnectionError("the broker closed the connection")
        if not received:
            counts[1], first_cpu = time.perf_counter(), time.process_time()
        buffer = carry + data if carry else data
        publishes, mids, used = walk(buffer)
        carry = buffer[used:]
        if mids:
            sock.sendall(b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids]))
        received += publishes
        counts[0] = received
    counts[2] = time.perf_counter()
    counts[3] = time.process_time() - first_cpu
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()


@dataclass(frozen=True)
class Received:
    messages: int
    first: float  # perf_counter of the first read, in the parent's clock (same machine)
    last: float
    cpu_s: float


class RawSubscriber:
    """``expected`` messages of ``topic_filter`` received in a child process."""

    def __init__(self, host: str, port: int, topic_filter: str, expected: int, *,
                 client_id: str, receive_maximum: int = 2000) -> None:
        context = multiprocessing.get_context("fork")
        self._ready = context.Event()
        self._counts = context.Array("d", 4, lock=False)
        self._process = context.Process(
            target=_receive, args=(host, port, topic_filter, client_id, expected,
                                   receive_maximum, self._ready, self._counts),
            daemon=True)

    def start(self, timeout: float = 10) -> None:
        self._process.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the raw subscriber did not subscribe")

    @property
    def received(self) -> int:
        return int(self._counts[0])

    @property
    def pid(self) -> int:
        return self._process.pid or 0

    def result(self, timeout: float) -> Received:
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            raise TimeoutError(f"the raw subscriber got {self.received:,} messages")
        if self._process.exitcode:
            raise RuntimeError(f"the raw subscriber failed (exit {self._process.exitcode})")
        counts = self._counts
        return Received(int(counts[0]), counts[1], counts[2], counts[3])
