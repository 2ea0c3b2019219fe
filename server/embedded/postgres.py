"""A private PostgreSQL cluster with TimescaleDB preloaded.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to the
``postgres`` system user: its folder is chowned to it and every server command runs
through ``runuser``. The server listens on 127.0.0.1 only, on the port we give it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from .ports import ServiceError, free_port, port_open, wait_for_port

log = logging.getLogger(__name__)

PG_MAJOR = os.environ.get("TIDEFIELD_PG_MAJOR", "15")

# Settings for a cluster that takes sustained COPY loads on a 2-core machine: a bigger
# WAL budget avoids forced checkpoints mid-load; durability is unchanged (fsync and
# synchronous_commit stay on: exactly-once depends on a commit being a commit).
DEFAULT_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'timescaledb'",
    "timescaledb.telemetry_level": "off",
    "max_connections": "200",
    "shared_buffers": "512MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "max_wal_size": "8GB",
    "min_wal_size": "1GB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
    "wal_compression": "on",
    "wal_buffers": "64MB",
    "effective_cache_size": "8GB",
    "random_page_cost": "1.1",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "timezone": "'UTC'",
}


def pg_bindir() -> Path:
    candidates = [Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    for path in candidates:
        if (path / "initdb").exists():
            return path
    raise ServiceError("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                       "run scripts/setup.sh")


class PostgresCluster:
    """A cluster in ``data_dir`` (created on first start, reused after)."""

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 conf: dict[str, str] | None = None, user: str = "postgres") -> None:
        self.base = Path(data_dir).resolve()
        self.data_dir = self.base / "data"
        self.port = port or free_port()
        self.conf = {**DEFAULT_CONF, **(conf or {})}
        self.superuser = user
        self.bindir = pg_bindir()
        self._as_root = os.geteuid() == 0
        self.log_file = self.base / "postgres.log"

    # --- commands -------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ServiceError(f"{args[0]} failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")
        return result

    def _own(self, path: Path) -> None:
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
                os.chown(p, pw.pw_uid, pw.pw_gid)

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        if self.initialized:
            return
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        self._check_traversable()
        self._own(self.base)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.superuser, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8")
        log.info("initialised PostgreSQL cluster in %s", self.data_dir)

    def _check_traversable(self) -> None:
        """postgres must be able to reach the folder: a 0700 parent (say /root) stops it."""
        if not self._as_root:
            return
        for parent in self.base.parents:
            if not parent.stat().st_mode & 0o001:
                raise ServiceError(
                    f"{parent} is not searchable by other users, so the postgres user cannot "
                    f"reach {self.base}; choose a data folder elsewhere (e.g. under /var/tmp)")

    def _write_conf(self) -> None:
        lines = [f"{k} = {v}" for k, v in self.conf.items()]
        lines += [f"port = {self.port}", f"unix_socket_directories = '{self.data_dir}'"]
        auto = self.data_dir / "tidefield.conf"
        auto.write_text("\n".join(lines) + "\n")
        self._own(auto)
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        if "include_if_exists = 'tidefield.conf'" not in text:
            main.write_text(text + "\ninclude_if_exists = 'tidefield.conf'\n")

    def prepare(self) -> list[str]:
        """Initialise the cluster if need be and write its settings; the command that
        runs the server in the foreground (what a supervisor runs and restarts)."""
        self.init()
        self._write_conf()
        self.log_file.touch()
        self._own(self.log_file)
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_root else cmd

    def accepting(self) -> bool:
        """Whether the server takes connections (not merely listens: it may still be
        recovering after a crash)."""
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def start(self, timeout: float = 60) -> None:
        self.init()
        if self.running():
            return
        if port_open(self.port):
            raise ServiceError(f"port {self.port} is already taken")
        self._write_conf()
        self.log_file.touch()
        self._own(self.log_file)
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)
        wait_for_port(self.port, timeout=timeout)
        log.info("PostgreSQL listening on 127.0.0.1:%d", self.port)

    def running(self) -> bool:
        if not self.initialized:
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        if not self.running():
            return
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t",
                           str(int(timeout)), "stop", check=False, timeout=timeout + 10)
        # The server may have been stopping already (a signal to our whole process group
        # reaches the postmaster too) and be gone before pg_ctl looked: that is stopped.
        if result.returncode != 0 and self.running():
            raise ServiceError(f"pg_ctl stop failed ({result.returncode}): "
                               f"{result.stderr.strip() or result.stdout.strip()}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Crash the postmaster (SIGKILL), as a power cut would; start() recovers."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().split()[0])
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and port_open(self.port):
                time.sleep(0.05)

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # --- connecting -----------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create ``name`` if it does not exist; return its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
