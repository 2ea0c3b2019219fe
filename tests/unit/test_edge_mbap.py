"""The lean Modbus TCP client (edge/drivers/mbap.py) against a scripted peer on a real
socket, for the misbehaviours a correct device (firmware-sim's emulator, used in
tests/integration/test_edge_modbus.py) never shows: answers to another request, short and
trickled frames, a peer that hangs up."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from tidefield.edge.drivers.mbap import (
    READ_HOLDING_REGISTERS,
    READ_INPUT_REGISTERS,
    MbapClient,
    ModbusConnectError,
    ModbusExceptionAnswer,
    ModbusLinkError,
)

Request = tuple[int, int, int, int, int, int]  # tid, protocol, unit, function, start, count


def answer(tid: int, unit: int, pdu: bytes, *, protocol: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def registers_pdu(function: int, words: list[int]) -> bytes:
    return struct.pack(f">BB{len(words)}H", function, 2 * len(words), *words)


class Peer:
    """A TCP server that hands each request to ``respond``, which sends what it likes."""

    def __init__(self, respond: Callable[[socket.socket, Request], None]) -> None:
        self.requests: list[Request] = []
        self.connections = 0
        self._respond = respond
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            while True:
                data = b""
                while len(data) < 12:
                    chunk = conn.recv(12 - len(data))
                    if not chunk:
                        return
                    data += chunk
                tid, protocol, length, unit, function, start, count = struct.unpack(
                    ">HHHBBHH", data)
                assert length == 6
                request = (tid, protocol, unit, function, start, count)
                self.requests.append(request)
                try:
                    self._respond(conn, request)
                except OSError:
                    return

    def close(self) -> None:
        self._listener.close()


def honest(conn: socket.socket, request: Request) -> None:
    tid, _, unit, function, start, count = request
    conn.sendall(answer(tid, unit, registers_pdu(function, [start + i for i in range(count)])))


@pytest.fixture
def peer_with():
    peers: list[Peer] = []

    def make(respond) -> Peer:
        peers.append(Peer(respond))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


def test_reads_holding_and_input_registers_with_fresh_transaction_ids(peer_with):
    peer = peer_with(honest)
    client = MbapClient("127.0.0.1", peer.port, 2.0)
    try:
        assert client.read_registers(READ_HOLDING_REGISTERS, 10, 3, 7) == [10, 11, 12]
        assert client.read_registers(READ_INPUT_REGISTERS, 0, 125, 7) == list(range(125))
    finally:
        client.close()
    (tid1, p1, u1, f1, s1, c1), (tid2, _, _, f2, _, c2) = peer.requests
    assert (p1, u1, f1, s1, c1) == (0, 7, 3, 10, 3)
    assert (f2, c2) == (4, 125)
    assert tid2 == tid1 + 1
    assert peer.connections == 1  # one connection for both


def test_an_exception_answer_keeps_the_connection(peer_with):
    def busy_then_honest(conn, request):
        tid, _, unit, function, *_ = request
        if len(peer.requests) == 1:
            conn.sendall(answer(tid, unit, bytes([function | 0x80, 6])))
        else:
            honest(conn, request)

    peer = peer_with(busy_then_honest)
    client = MbapClient("127.0.0.1", peer.port, 2.0)
    try:
        with pytest.raises(ModbusExceptionAnswer) as raised:
            client.read_registers(READ_HOLDING_REGISTERS, 0, 2, 1)
        assert raised.value.code == 6
        assert client.read_registers(READ_HOLDING_REGISTERS, 0, 2, 1) == [0, 1]
    finally:
        client.close()
    assert peer.connections == 1


def test_a_trickled_answer_is_reassembled(peer_with):
    def trickle(conn, request):
        tid, _, unit, function, _, count = request
        frame = answer(tid, unit, registers_pdu(function, [0xBEEF] * count))
        for byte in frame:
            conn.sendall(bytes([byte]))
            time.sleep(0.001)

    peer = peer_with(trickle)
    client = MbapClient("127.0.0.1", peer.port, 2.0)
    try:
        assert client.read_registers(READ_HOLDING_REGISTERS, 0, 4, 1) == [0xBEEF] * 4
    finally:
        client.close()


# Each answer the client must not accept, and what it says; the next request then goes
# out on a new connection, so nothing left of the bad answer can be read as its reply.
BAD_ANSWERS = {
    "another transaction": (lambda t, u, f, c: answer(t + 5, u, registers_pdu(f, [1] * c)),
                            "another request"),
    "another unit": (lambda t, u, f, c: answer(t, u + 1, registers_pdu(f, [1] * c)),
                     "another request"),
    "not Modbus": (lambda t, u, f, c: answer(t, u, registers_pdu(f, [1] * c), protocol=1),
                   "another request"),
    "too few registers": (lambda t, u, f, c: answer(t, u, registers_pdu(f, [1] * (c - 1))),
                          "malformed"),
    "another function": (lambda t, u, f, c: answer(t, u, registers_pdu(f ^ 7, [1] * c)),
                         "malformed"),
    "a length of zero": (lambda t, u, f, c: struct.pack(">HHHB", t, 0, 0, u), "length"),
    "hang up midway": (lambda t, u, f, c: answer(t, u, registers_pdu(f, [1] * c))[:9],
                       "closed the connection"),
}


@pytest.mark.parametrize("case", BAD_ANSWERS, ids=list(BAD_ANSWERS))
def test_a_bad_answer_is_refused_and_the_next_request_starts_clean(peer_with, case):
    make_frame, message = BAD_ANSWERS[case]

    def bad_then_honest(conn, request):
        tid, _, unit, function, _, count = request
        if len(peer.requests) == 1:
            conn.sendall(make_frame(tid, unit, function, count))
            if message == "closed the connection":
                conn.shutdown(socket.SHUT_RDWR)
                raise OSError("hung up")
        else:
            honest(conn, request)

    peer = peer_with(bad_then_honest)
    client = MbapClient("127.0.0.1", peer.port, 1.0)
    try:
        with pytest.raises(ModbusLinkError, match=message):
            client.read_registers(READ_HOLDING_REGISTERS, 0, 3, 1)
        assert client.read_registers(READ_HOLDING_REGISTERS, 0, 3, 1) == [0, 1, 2]
    finally:
        client.close()
    assert peer.connections == 2


def test_a_silent_device_times_out_within_the_timeout(peer_with):
    peer = peer_with(lambda conn, request: None)  # reads, never answers
    client = MbapClient("127.0.0.1", peer.port, 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(ModbusLinkError, match="timed out"):
            client.read_registers(READ_HOLDING_REGISTERS, 0, 1, 1)
    finally:
        client.close()
    assert 0.25 < time.monotonic() - started < 2


def test_a_trickle_cannot_stretch_the_timeout(peer_with):
    def one_byte_a_while(conn, request):
        tid, _, unit, function, _, count = request
        for byte in answer(tid, unit, registers_pdu(function, [1] * count)):
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    peer = peer_with(one_byte_a_while)
    client = MbapClient("127.0.0.1", peer.port, 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(ModbusLinkError, match="timed out"):
            client.read_registers(READ_HOLDING_REGISTERS, 0, 10, 1)  # 29 bytes: 2.9 s
    finally:
        client.close()
    assert time.monotonic() - started < 1.5


def test_nothing_listening_is_a_connect_error():
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    client = MbapClient("127.0.0.1", port, 1.0)
    with pytest.raises(ModbusConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
        client.read_registers(READ_HOLDING_REGISTERS, 0, 1, 1)
