from __future__ import annotations

import socket
import time


class ServiceError(RuntimeError):
    """An embedded service could not be set up, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0,
                  alive=lambda: True) -> None:
    """Wait until something accepts connections on ``port``; ``alive`` stops early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host):
            return
        if not alive():
            raise ServiceError(f"process exited before listening on {host}:{port}")
        time.sleep(0.05)
    raise ServiceError(f"nothing listened on {host}:{port} after {timeout:.0f} s")
