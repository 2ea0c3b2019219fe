"""free_port: ports no outgoing connection can take before the server binds them."""

from __future__ import annotations

import socket

from tidefield.server.embedded.ports import SPARE_PORTS_FROM, ephemeral_range, free_port


def test_ports_come_from_below_the_ephemeral_range_once_each():
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(SPARE_PORTS_FROM <= port < low for port in ports)


def test_a_port_in_use_is_not_handed_out():
    taken = []
    try:
        for _ in range(3):  # hold a few, then ask for many more: none of the held comes back
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", free_port()))
            sock.listen()
            taken.append(sock)
        held = {sock.getsockname()[1] for sock in taken}
        for _ in range(100):
            port = free_port()
            assert port not in held
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", port))  # and it really is free
    finally:
        for sock in taken:
            sock.close()
