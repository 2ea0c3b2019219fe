"""A private Mosquitto broker with a generated config, run as a child process."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from .ports import ServiceError, free_port, port_open, wait_for_port

log = logging.getLogger(__name__)

# The broker must hold what a platform needs held: a persistent session of the ingest
# workers keeps queueing while they are down (in effect unbounded by count, bounded by
# memory), and batches of thousands of readings pass. Not max_queued_messages 0
# ("unlimited"): with it, Mosquitto 2.0.11 drops a client's connection right after
# refusing one of its QoS 1 publishes by ACL (PUBACK 0x87, then "Bad socket read/write"),
# where a finite limit keeps the client connected (tests/integration/test_security.py).
DEFAULT_CONF = {
    "persistence": "true",
    # The whole file is written each time: 5 s, not 30, shrinks what a broker killed with
    # SIGKILL forgets six-fold for +1.3 % of a core while it holds a 100,000-message
    # backlog and nothing measurable at the fleet's rate; 1 s cost +7 %, and
    # autosave_on_changes halved how fast a backlog is taken (bench/broker_autosave.py,
    # docs/benchmarks.md). The agents' receipts make correctness independent of it.
    "autosave_interval": "5",
    "max_queued_messages": "10000000",
    "max_queued_bytes": "0",
    "max_inflight_messages": "0",
    "max_packet_size": "1048576",
    "persistent_client_expiration": "7d",
    "log_type": "error",
    "log_dest": "stderr",
}


class MosquittoBroker:
    def __init__(self, base_dir: Path, *, port: int | None = None,
                 extra_conf: list[str] | None = None, allow_anonymous: bool = True,
                 tls: bool = False) -> None:
        """``extra_conf`` lines follow the listener line, so TLS options (certfile,
        keyfile) given there apply to it; ``tls`` only says which URL scheme it speaks."""
        self.base = Path(base_dir).resolve()
        self.port = port or free_port()
        self.extra_conf = extra_conf or []
        self.allow_anonymous = allow_anonymous
        self.tls = tls
        self.conf_file = self.base / "mosquitto.conf"
        self.log_file = self.base / "mosquitto.log"
        self.proc: subprocess.Popen | None = None
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceError("mosquitto not found; run scripts/setup.sh")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        # Run as whoever we are: as root, mosquitto would otherwise switch to its own
        # user, which cannot write a persistence folder we created.
        user = pwd.getpwuid(os.geteuid()).pw_name
        lines = [f"user {user}", f"listener {self.port} 127.0.0.1",
                 f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
                 f"persistence_location {self.base}/"]
        lines += [f"{k} {v}" for k, v in DEFAULT_CONF.items()]
        lines += self.extra_conf
        self.conf_file.write_text("\n".join(lines) + "\n")

    def prepare(self) -> list[str]:
        """Write the config; the command that runs the broker in the foreground, for a
        supervisor to run and restart."""
        self._write_conf()
        return [self.binary, "-c", str(self.conf_file)]

    def start(self, timeout: float = 15) -> None:
        if self.running():
            return
        if port_open(self.port):
            raise ServiceError(f"port {self.port} is already taken")
        self._write_conf()
        log_handle = open(self.log_file, "ab")  # noqa: SIM115  (owned by the child)
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_file)],
                                     stdout=log_handle, stderr=log_handle,
                                     start_new_session=True)
        log_handle.close()
        try:
            proc = self.proc
            wait_for_port(self.port, timeout=timeout, alive=lambda: proc.poll() is None)
        except ServiceError as exc:
            raise ServiceError(f"{exc}; see {self.log_file}") from exc
        log.info("Mosquitto listening on 127.0.0.1:%d", self.port)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        """Stop cleanly: Mosquitto writes its persistence file on SIGTERM."""
        if not self.running() or self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
