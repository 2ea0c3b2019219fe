"""The read replica: a streaming standby of the primary (PostgreSQL's own replication),
that the API's read-only routes, exports and SensorThings read from.

`tidefield up --replica` runs it as a child (`tidefield replica run`): on first start a
copy of the primary by ``pg_basebackup``, through a replication slot that the primary
keeps WAL for (at most ``replica_max_slot_wal_gb``: a replica away for long must not
fill the primary's disk); then the standby, streaming. When the slot no longer holds
what it needs, the standby fetches it from the WAL archive (pgBackRest's
``archive-get``), when there is one. The primary's hot_standby_feedback keeps vacuum
from removing rows a long export on the replica still reads.

``replica_state`` is what /metrics and `tidefield status` report: is it reachable and
streaming, and how far behind (bytes of WAL, and seconds since the newest transaction it
replayed when it is behind).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tidefield.server.db import one_row, scalar
from tidefield.server.embedded import PostgresCluster

from .errors import OpsError, ToolFailed
from .owner import give, owner, run_as
from .pgbackrest import PgBackRest, quoted

log = logging.getLogger(__name__)

SLOT = "tidefield_replica"
APPLICATION_NAME = "tidefield_replica"
BASEBACKUP_TIMEOUT_S = 6 * 3600.0
WATCH_S = 1.0
# A standby's own settings, over the embedded server's defaults
STANDBY_CONF = {
    "hot_standby": "on",
    # the primary keeps rows a query here still reads: a long export is not cancelled
    # by vacuum on the primary (it may still be by a dropped chunk: retention)
    "hot_standby_feedback": "on",
    "max_standby_streaming_delay": "5min",
    "max_standby_archive_delay": "5min",
    "shared_buffers": "256MB",
    "archive_mode": "off",
}


def primary_settings(max_slot_wal_gb: float) -> dict[str, str]:
    """What the primary needs for a replica (beside wal_level=replica, the default)."""
    return {"max_slot_wal_keep_size": f"{int(max_slot_wal_gb * 1024)}MB",
            "max_wal_senders": "10", "max_replication_slots": "10"}


class Replica:
    """The standby in ``base`` (``base/data``) on ``port``, of the primary at
    ``primary_url``; ``archive``: the repository to fetch WAL from when streaming
    cannot give it."""

    def __init__(self, base: Path, *, port: int, primary_url: str,
                 archive: PgBackRest | None = None, conf: dict[str, str] | None = None) -> None:
        self.primary_url = primary_url
        conf = {**STANDBY_CONF, **(conf or {})}
        conf["primary_conninfo"] = quoted(make_conninfo(primary_url,
                                                        application_name=APPLICATION_NAME))
        conf["primary_slot_name"] = f"'{SLOT}'"
        if archive is not None:
            conf["restore_command"] = quoted(
                " ".join(archive.command_line("archive-get")) + ' %f "%p"')
        self.cluster = PostgresCluster(base, port=port, conf=conf)
        self._owner = owner()

    @property
    def url(self) -> str:
        """The replica's URL for the primary's database."""
        return self.cluster.url(str(conninfo_to_dict(self.primary_url).get("dbname", "postgres")))

    def ensure_copy(self) -> bool:
        """Make the copy if there is none yet; True when it was made now."""
        if self.cluster.initialized:
            return False
        self._ensure_slot()
        base, data = self.cluster.base, self.cluster.data_dir
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        give(base, self._owner)
        primary = conninfo_to_dict(self.primary_url)
        primary.pop("dbname", None)
        log.warning("copying the primary for the replica into %s", data)
        argv = [str(self.cluster.bindir / "pg_basebackup"), "-D", str(data), "-X", "stream",
                "-S", SLOT, "-c", "fast", "-d", make_conninfo("", **primary)]
        try:
            result = run_as(argv, self._owner, timeout=BASEBACKUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            result = None
        if result is None or result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)  # no half copy stays behind
            raise ToolFailed("pg_basebackup", -1 if result is None else result.returncode,
                             "timed out" if result is None else result.stderr.strip())
        (data / "standby.signal").touch()
        give(data / "standby.signal", self._owner)
        return True

    def _ensure_slot(self) -> None:
        try:
            with psycopg.connect(self.primary_url, autocommit=True, connect_timeout=10) as conn:
                exists = conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
                                      (SLOT,)).fetchone()
                if exists is None:
                    conn.execute("SELECT pg_create_physical_replication_slot(%s, true)",
                                 (SLOT,))
        except psycopg.Error as exc:
            raise OpsError(f"cannot prepare the primary for a replica: "
                           f"{str(exc).strip()}") from exc

    def run(self, stop: threading.Event) -> int:
        """Copy if needed, start the standby, watch it until ``stop``; then stop it.
        Returns 0 when stopped, 1 when the standby died (the supervisor restarts us)."""
        self.ensure_copy()
        self.cluster.start(timeout=600)
        log.warning("replica of the primary serving reads on port %d", self.cluster.port)
        try:
            while not stop.wait(WATCH_S):
                # a stop signal to our process group reaches the standby too: stopping then
                # is no death
                if not self.cluster.running() and not stop.is_set():
                    log.error("the replica's server stopped; see %s", self.cluster.log_file)
                    return 1
        finally:
            self.cluster.stop()
        return 0


def promote(replica_url: str, timeout_s: int = 60) -> None:
    """Make the standby a primary (it stops following and takes writes): what to do when
    the primary is lost. OpsError when it is no standby or does not finish."""
    try:
        with psycopg.connect(replica_url, autocommit=True, connect_timeout=10) as conn:
            if not scalar(conn.execute("SELECT pg_is_in_recovery()")):
                raise OpsError("that server is no standby (promoted already?)")
            if not scalar(conn.execute("SELECT pg_promote(true, %s)", (timeout_s,))):
                raise OpsError(f"the standby did not finish promoting within {timeout_s} s")
    except psycopg.Error as exc:
        raise OpsError(f"cannot promote the replica: {str(exc).strip()}") from exc


@dataclass(frozen=True, slots=True)
class ReplicaState:
    reachable: bool
    streaming: bool = False
    lag_bytes: int | None = None  # WAL the primary has written that the replica has not replayed
    lag_s: float | None = None  # 0 when caught up; else age of the newest replayed transaction
    problem: str | None = None


def replica_state(replica_url: str, primary_url: str | None = None) -> ReplicaState:
    """How the replica is doing (a few cheap queries on each side)."""
    try:
        with psycopg.connect(replica_url, connect_timeout=2, autocommit=True) as conn:
            standby, replay_lsn, age, receiving = one_row(conn.execute(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, "
                "EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')"))
    except psycopg.Error as exc:
        return ReplicaState(False, problem=f"replica unreachable: "
                                           f"{str(exc).strip().splitlines()[0]}")
    if not standby:
        return ReplicaState(True, problem="the replica is no standby (promoted?): it no "
                                          "longer follows the primary")
    lag_bytes = None
    if primary_url is not None and replay_lsn is not None:
        try:
            with psycopg.connect(primary_url, connect_timeout=2, autocommit=True) as conn:
                lag_bytes = int(scalar(conn.execute(
                    "SELECT greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn), 0)",
                    (replay_lsn,))))
        except psycopg.Error as exc:
            log.info("primary unreachable for the replica's lag: %s", exc)
    lag_s = 0.0 if lag_bytes == 0 else (max(0.0, age) if age is not None else None)
    problem = None if receiving else "the replica is not streaming from the primary"
    return ReplicaState(True, receiving, lag_bytes, lag_s, problem)
