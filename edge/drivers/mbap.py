"""A lean Modbus TCP client over one socket: read holding (03) and input (04) registers
and coils (01); write a coil (05), coils (15), a register (06), registers (16).

Why not pymodbus here: a read through pymodbus's synchronous client costs about 140 µs of
CPU (its transaction manager, framer and response objects) against about 55 µs for the
same exchange on a plain socket, and importing it adds megabytes to the agent's memory.
On a Raspberry Pi polling a few dozen devices that is most of the agent's CPU. The two
function codes the driver needs fit in a page; Modbus RTU, with its serial timing and
CRC, stays with pymodbus.

The actuators (``edge/actuators.py``) write through the same client: a relay or an
aerator is a coil, a valve position or a set point a register.

The frame (Modbus Messaging on TCP/IP Implementation Guide v1.0b): a 7-byte MBAP header
(transaction id, protocol id 0, length of what follows, unit id), then the PDU (function
code, start address, quantity; the answer: function code, byte count, registers, or
function code | 0x80 and an exception code). One request at a time: an answer must carry
the request's transaction id and unit; anything else (or a timeout, or a short frame)
closes the connection, so a late answer can never be taken for the next request's.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

READ_COILS = 0x01
READ_HOLDING_REGISTERS = 0x03
READ_INPUT_REGISTERS = 0x04
WRITE_SINGLE_COIL = 0x05
WRITE_SINGLE_REGISTER = 0x06
WRITE_MULTIPLE_COILS = 0x0F
WRITE_MULTIPLE_REGISTERS = 0x10
_COIL_ON = 0xFF00
_HEADER = struct.Struct(">HHHB")  # tid, protocol, length, unit
_MAX_PDU = 253  # the Modbus ADU limit (260) less the header


class ModbusExceptionAnswer(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exception {code}")
        self.code = code


class ModbusLinkError(Exception):
    """No usable answer: timed out, closed, or a malformed frame."""


class ModbusConnectError(ModbusLinkError):
    """The device (or its gateway) cannot be reached."""


class MbapClient:
    """One Modbus TCP connection, opened on first use and after any failure. Not
    thread-safe: the driver's line lock serialises requests."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._sock: socket.socket | None = None
        self._tid = 0

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as exc:
            raise ModbusConnectError(f"cannot connect to {self.host}:{self.port}: "
                                     f"{exc.strerror or exc}") from exc
        # requests are tiny and each waits for its answer: never hold one back (Nagle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def read_registers(self, function: int, start: int, count: int, unit: int) -> list[int]:
        """``count`` registers from ``start`` with function 03 or 04 of ``unit``."""
        def check(pdu: bytes) -> None:
            if pdu[0] != function or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
                raise ModbusLinkError(f"a malformed answer (function {pdu[0]}, {pdu[1]} "
                                      f"bytes for {count} registers)")

        pdu = self._request(function, struct.pack(">HH", start, count), unit, check)
        return list(struct.unpack_from(f">{count}H", pdu, 2))

    def read_coils(self, start: int, count: int, unit: int) -> list[bool]:
        """``count`` coils from ``start`` (function 01)."""
        size = (count + 7) // 8

        def check(pdu: bytes) -> None:
            if pdu[0] != READ_COILS or pdu[1] != size or len(pdu) != 2 + size:
                raise ModbusLinkError(f"a malformed answer to a read of {count} coils")

        pdu = self._request(READ_COILS, struct.pack(">HH", start, count), unit, check)
        return [bool(pdu[2 + i // 8] >> (i % 8) & 1) for i in range(count)]

    def write_coil(self, address: int, on: bool, unit: int) -> None:
        """Function 05; the device echoes the request."""
        body = struct.pack(">HH", address, _COIL_ON if on else 0)
        self._request(WRITE_SINGLE_COIL, body, unit, _echo(WRITE_SINGLE_COIL, body))

    def write_register(self, address: int, value: int, unit: int) -> None:
        """Function 06; the device echoes the request."""
        body = struct.pack(">HH", address, value)
        self._request(WRITE_SINGLE_REGISTER, body, unit, _echo(WRITE_SINGLE_REGISTER, body))

    def write_coils(self, start: int, values: list[bool], unit: int) -> None:
        """Function 15; the answer names the start and count."""
        packed = bytearray((len(values) + 7) // 8)
        for i, on in enumerate(values):
            if on:
                packed[i // 8] |= 1 << (i % 8)
        head = struct.pack(">HH", start, len(values))
        self._request(WRITE_MULTIPLE_COILS, head + bytes([len(packed)]) + packed, unit,
                      _echo(WRITE_MULTIPLE_COILS, head))

    def write_registers(self, start: int, values: list[int], unit: int) -> None:
        """Function 16; the answer names the start and count."""
        head = struct.pack(">HH", start, len(values))
        body = head + bytes([2 * len(values)]) + struct.pack(f">{len(values)}H", *values)
        self._request(WRITE_MULTIPLE_REGISTERS, body, unit,
                      _echo(WRITE_MULTIPLE_REGISTERS, head))

    def _request(self, function: int, body: bytes, unit: int,
                 check: Callable[[bytes], None]) -> bytes:
        """Send one request PDU (function, body); the answer's PDU, which ``check``
        accepted (its ModbusLinkError closes the connection like any other)."""
        self.connect()
        self._tid = (self._tid + 1) & 0xFFFF
        try:
            pdu = self._exchange(function, body, unit)
            check(pdu)
            return pdu
        except ModbusLinkError:
            self.close()  # the stream's position is unknown now
            raise
        except OSError as exc:  # a timeout, a reset
            self.close()
            raise ModbusLinkError(str(exc) or type(exc).__name__) from exc

    def _exchange(self, function: int, body: bytes, unit: int) -> bytes:
        sock = self._sock
        assert sock is not None
        deadline = time.monotonic() + self.timeout_s
        sock.settimeout(self.timeout_s)
        sock.sendall(_HEADER.pack(self._tid, 0, len(body) + 2, unit) + bytes([function])
                     + body)
        tid, protocol, length, answer_unit = _HEADER.unpack(self._receive(7, deadline))
        if not 2 <= length - 1 <= _MAX_PDU:
            raise ModbusLinkError(f"a frame of length {length}")
        pdu = self._receive(length - 1, deadline)
        if tid != self._tid or protocol != 0 or answer_unit != unit:
            raise ModbusLinkError(f"an answer to another request (transaction {tid}, unit "
                                  f"{answer_unit}; asked {self._tid}, unit {unit})")
        if pdu[0] == function | 0x80:
            raise ModbusExceptionAnswer(pdu[1])
        return pdu

    def _receive(self, n: int, deadline: float) -> bytes:
        sock = self._sock
        assert sock is not None
        data = b""
        while len(data) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(remaining)
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ModbusLinkError("the device closed the connection")
            data += chunk
        return data

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _echo(function: int, body: bytes) -> Callable[[bytes], None]:
    """A write's answer repeats the function and (the head of) the request."""
    def check(pdu: bytes) -> None:
        if pdu != bytes([function]) + body:
            raise ModbusLinkError(f"a malformed answer to function {function:#04x}")
    return check
