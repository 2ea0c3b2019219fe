from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    """An embedded service could not be set up, started or stopped."""


# Below the kernel's ephemeral range, where outgoing connections never take a port.
SPARE_PORTS_FROM = 20_000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives outgoing connections (and ``bind(0)``)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing is bound to right now, from below the ephemeral range.

    Why not ``bind(0)``: its port comes from the ephemeral range, which every outgoing
    connection draws from too, so between picking the port and the server binding it, a
    client connection (a database pool of the same ``tidefield up``) can take it: seen in
    CI as a dashboard whose port was "not available" five restarts in a row. Below the
    range only another ``bind`` can take a port. Each port is handed out once per process.
    """
    low, _ = ephemeral_range()
    span = low - SPARE_PORTS_FROM
    with _handed_out_lock:
        for _ in range(200 if span > 1000 else 0):
            port = SPARE_PORTS_FROM + secrets.randbelow(span)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))  # no spare range on this machine: the kernel's pick
            return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
                  alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until something accepts connections on ``port``; ``alive`` stops early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        if not alive():
            raise ServiceError(f"process exited before listening on {host}:{port}")
        time.sleep(0.05)
    raise ServiceError(f"nothing listened on {host}:{port} after {timeout:.0f} s")
