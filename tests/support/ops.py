"""A platform's database laid out as `tidefield up` lays it out (``DATA_DIR/postgres``,
archiving its WAL to ``DATA_DIR/backup`` with pgBackRest), started as `tidefield up`
starts it but without the rest of the platform; and readings to put in it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tidefield.protocol.registry import load_sites
from tidefield.server.db.migrate import migrate
from tidefield.server.db.registry import load_registry
from tidefield.server.embedded import PostgresCluster, free_port
from tidefield.server.ops import wiring
from tidefield.server.ops.deployment import DATABASE, Deployment, embedded_cluster
from tidefield.server.settings import OpsSettings, UpSettings

# Small enough for a test machine that runs other things too (and quick to back up).
OPS_PG_CONF = {"shared_buffers": "64MB", "max_wal_size": "256MB", "min_wal_size": "80MB",
               "effective_cache_size": "256MB", "wal_buffers": "4MB"}


@dataclass
class PlatformDb:
    """The embedded database of a data folder, with its environment for commands."""

    data_dir: Path
    cluster: PostgresCluster
    url: str
    env: dict[str, str]

    def settings(self, **overrides: object) -> OpsSettings:
        return OpsSettings(data_dir=self.data_dir, embedded_pg_port=self.cluster.port,
                           **overrides)

    def deployment(self, **overrides: object) -> Deployment:
        return Deployment.from_settings(self.settings(**overrides))

    def tidefield(self, *args: str, timeout: float = 600,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """A `tidefield` command, as an operator runs it, in this platform's environment."""
        return subprocess.run([sys.executable, "-m", "tidefield.cli", *args],
                              env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)


def platform_env(data_dir: Path, pg_port: int, repo: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEFIELD_")}
    env.update({"TIDEFIELD_DATA_DIR": str(data_dir), "TIDEFIELD_EMBEDDED_PG_PORT": str(pg_port),
                "TIDEFIELD_LOG_LEVEL": "WARNING"})
    if repo is not None:
        env["TIDEFIELD_BACKUP_REPO"] = str(repo)
    return env


@contextmanager
def platform_db(data_dir: Path, *, archive: bool = True, repo: Path | None = None,
                files: bool = True, conf: dict[str, str] | None = None) -> Iterator[PlatformDb]:
    """The database `tidefield up` would start in ``data_dir``: archiving to the
    repository (``repo``, else DATA_DIR/backup) from its first start, migrated, the
    registry loaded; with ``files``, an operator key file and broker files (not a broker's
    own: a stand-in) to keep beside it."""
    port = free_port()
    settings = UpSettings(data_dir=data_dir, embedded_pg_port=port, backup_archive=archive,
                          backup_repo=repo)
    cluster = embedded_cluster(data_dir, port, conf={
        **OPS_PG_CONF, **wiring.primary_conf(settings, data_dir), **(conf or {})})
    cluster.start()
    try:
        url = cluster.create_database(DATABASE)
        if archive:
            wiring.prepare_repository(settings, data_dir, url)
        migrate(url)
        with psycopg.connect(url) as conn:
            load_registry(conn, load_sites())
        if files:
            (data_dir / "operator.key").write_text("tf_test_operator_key\n")
            broker = data_dir / "mosquitto"
            (broker / "logins").mkdir(parents=True, exist_ok=True)
            (broker / "dynamic-security.json").write_text('{"clients": []}\n')
            (broker / "logins" / "ingest").write_text("secret-of-ingest")
            (broker / "mosquitto.db").write_bytes(b"persisted sessions")
        yield PlatformDb(data_dir, cluster, url, platform_env(data_dir, port, repo))
    finally:
        cluster.destroy()


def series_ids(url: str, count: int) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM series ORDER BY id LIMIT %s",
                                           (count,))]


def write_readings(url: str, series: list[int], start: datetime, minutes: int,
                   *, salt: float = 0.0) -> int:
    """One reading a minute for each series from ``start``; how many were written."""
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "INSERT INTO readings (series_id, time, value) "
            "SELECT s, %s + make_interval(mins => m), s * 0.5 + m * 0.01 + %s "
            "FROM unnest(%s::int[]) s, generate_series(0, %s - 1) m",
            (start, salt, series, minutes))
        return cur.rowcount


def readings_digest(url: str) -> tuple[int, str]:
    """Count and an order-free checksum of every reading."""
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        count, digest = conn.execute(
            "SELECT count(*), coalesce(sum(('x' || left(md5(r::text), 16))::bit(64)::bigint"
            "::numeric), 0)::text FROM readings r").fetchone()
    return count, digest


def hours_ago(hours: float) -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(hours=hours)
