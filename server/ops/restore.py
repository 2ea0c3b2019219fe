"""Restores: `tidefield restore --to TIME` into a fresh data folder, and `tidefield backup
verify`, which restores the newest backup into a scratch cluster and compares it.

Both let pgBackRest put the files back and PostgreSQL replay the archived WAL to the
target, promote there, and stop being a copy; we start the cluster, wait for that, look,
and stop it again. A restore never writes into a folder that holds a database: the
folder it fills is new, so a restore that goes wrong costs nothing but the attempt.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tidefield.server.db import scalar
from tidefield.server.embedded import PostgresCluster, free_port

from . import checksums, state
from .backup import read_mark, record_run
from .deployment import DATABASE, EMBEDDED_PG, Deployment
from .errors import CheckFailed, OpsError
from .pgbackrest import BackupSet, Cluster, PgBackRest, time_target

log = logging.getLogger(__name__)

RECOVERY_TIMEOUT_S = 6 * 3600.0  # replaying a week of WAL is hours, not days
SCRATCH = "verify-scratch"
# A cluster started only to be looked at: small, quiet, and never archiving. (Limits such
# as max_connections stay the primary's: a replay refuses to run under lower ones.)
SCRATCH_CONF = {"shared_buffers": "64MB", "max_wal_size": "1GB", "min_wal_size": "80MB",
                "effective_cache_size": "256MB", "archive_mode": "off",
                "timescaledb.max_background_workers": "0"}


def parse_target(text: str) -> datetime | None:
    """``latest`` (None: the end of the archive) or a moment with its time zone."""
    if text.strip().lower() == "latest":
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise OpsError(f"--to {text!r}: give `latest` or a time with its zone, e.g. "
                       f"'2026-03-01 09:30:00+08:00'") from None
    if moment.tzinfo is None:
        raise OpsError(f"--to {text!r} has no time zone: add one (+00:00 for UTC, +08:00 "
                       f"for Qingdao), a restore to the wrong hour is a restore to the "
                       f"wrong data")
    return moment


@dataclass(frozen=True, slots=True)
class RestoreReport:
    data_dir: Path
    backup: BackupSet
    target: datetime | None  # None: the end of the archive
    last_received: datetime | None  # when the newest message it stored was received
    readings_estimate: int
    newest_reading: datetime | None
    platform_files: int


@dataclass(frozen=True, slots=True)
class VerifyReport:
    label: str
    restore_point: str
    chunks: int
    rows: int
    seconds: float


def _backup_for(tool: PgBackRest, target: datetime | None, label: str | None) -> BackupSet:
    info = tool.info()
    if not info.backups:
        raise OpsError(f"no backups of stanza {tool.stanza!r} in {tool.repo} ({info.status}); "
                       f"is that the repository? --repo or TIDEFIELD_BACKUP_REPO names it")
    if label is not None:
        chosen = next((b for b in info.backups if b.label == label), None)
        if chosen is None:
            raise OpsError(f"no backup {label!r} in {tool.repo}; `tidefield backup list` "
                           f"shows what there is")
        return chosen
    if target is None:
        return info.backups[-1]
    before = [b for b in info.backups if b.stopped <= target]
    if not before:
        raise OpsError(f"the oldest backup in {tool.repo} ends at "
                       f"{info.backups[0].stopped:%Y-%m-%d %H:%M:%S} UTC, after "
                       f"{target.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: there is nothing "
                       f"to restore that early")
    return before[-1]


def _empty_cluster_folder(base: Path, tool: PgBackRest) -> None:
    """``base`` ready for a restore: new or empty, owned by the cluster's user."""
    if (base / "data").exists() and any((base / "data").iterdir()):
        raise OpsError(f"{base / 'data'} already holds a database; restore into a new, empty "
                       f"data folder (then start `tidefield up --data-dir` on it)")
    (base / "data").mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    (base / "data").chmod(0o700)
    tool.own_tree(base)


def recover(cluster: PostgresCluster, timeout: float = RECOVERY_TIMEOUT_S) -> None:
    """Start a restored cluster and wait until it has replayed to its target and been
    promoted; OpsError with PostgreSQL's own last words if it stops instead."""
    try:
        cluster.start(timeout=300)
    except Exception as exc:  # ServiceError of pg_ctl, or the port: the log says why
        raise OpsError(f"the restored cluster did not start: {exc}; "
                       f"{_last_words(cluster)}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(cluster.url(), connect_timeout=5) as conn:
                if not scalar(conn.execute("SELECT pg_is_in_recovery()")):
                    return
        except psycopg.OperationalError:
            if not cluster.running():
                raise OpsError(f"recovery stopped: {_last_words(cluster)}") from None
        time.sleep(0.25)
    raise OpsError(f"recovery did not finish within {timeout:.0f} s")


def _last_words(cluster: PostgresCluster) -> str:
    try:
        lines = cluster.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return f"see {cluster.log_file}"
    worst = [line for line in lines if " FATAL: " in line or " PANIC: " in line]
    return (worst or lines or [f"see {cluster.log_file}"])[-1].strip()


def restore(deployment: Deployment, to: datetime | None, *, backup_set: str | None = None,
            say: Callable[[str], None] = print) -> RestoreReport:
    """Restore the repository's database into ``deployment.data_dir`` (new) as it was
    at ``to`` (None: as late as the archive reaches), with the platform's files."""
    if not deployment.embedded:
        raise OpsError("restore fills a new data folder for `tidefield up`; for another "
                       "database, run pgBackRest's restore with the settings in "
                       "docs/operations.md")
    base = deployment.data_dir / EMBEDDED_PG
    port = free_port()
    cluster = PostgresCluster(base, port=port)
    tool = deployment.pgbackrest(Cluster(cluster.data_dir, port, cluster.data_dir))
    chosen = _backup_for(tool, to, backup_set)
    _empty_cluster_folder(base, tool)
    say(f"restoring backup {chosen.label} ({chosen.kind}, ended "
        f"{chosen.stopped:%Y-%m-%d %H:%M:%S} UTC) into {cluster.data_dir}")
    if to is None:
        tool.restore(cluster.data_dir, target_type="default", backup_set=chosen.label)
    else:
        tool.restore(cluster.data_dir, target_type="time", target=time_target(to),
                     backup_set=chosen.label)
    say("replaying archived WAL " + (f"up to {time_target(to)}" if to else
                                     "to the end of the archive"))
    # archiving on, to the same repository: the new timeline's history goes there, so a
    # later restore finds it
    cluster.conf.update(tool.archive_settings())
    try:
        recover(cluster)
    except OpsError as exc:
        if to is None or "before configured recovery target" not in str(exc):
            raise
        raise OpsError(f"the archive does not reach {time_target(to)} yet ({exc}). If the "
                       f"database still runs, `tidefield backup check` archives its current "
                       f"WAL (it closes a segment every minute by itself); then restore into "
                       f"another new folder") from exc
    try:
        with psycopg.connect(cluster.url(DATABASE)) as conn:
            last = scalar(conn.execute("SELECT max(received_at) FROM ingest_batches"))
            estimate = scalar(conn.execute("SELECT approximate_row_count('readings')"))
            newest = scalar(conn.execute("SELECT max(time) FROM readings"))
    except psycopg.Error as exc:
        raise OpsError(f"the restored database does not answer as expected: {exc}") from exc
    finally:
        cluster.stop()
    _forget_recovery_target(cluster.data_dir)
    kept = read_mark(deployment, chosen.label)
    archive = deployment.sidecar(chosen.label) / state.ARCHIVE_NAME
    files = state.restore(archive, deployment.layout, kept[1] if kept else None) \
        if archive.exists() else 0
    return RestoreReport(deployment.data_dir, chosen, to, last, int(estimate or 0), newest,
                         files)


def _forget_recovery_target(data_dir: Path) -> None:
    """The restore's target stays in postgresql.auto.conf after the recovery it was for;
    a copy made of this database later (a replica) must not stop there too."""
    auto = data_dir / "postgresql.auto.conf"
    lines = auto.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith("recovery_target")]
    if kept != lines:
        auto.write_text("".join(kept))  # owner and mode stay the file's


def verify(deployment: Deployment, scratch_dir: Path | None = None) -> VerifyReport:
    """pgBackRest's check of every file in the repository, then the newest backup that
    has a mark restored to its restore point in a scratch cluster, its platform files
    checked, and its sums compared. CheckFailed (or OpsError) when anything differs."""
    started_wall, started = datetime.now(UTC), time.monotonic()
    label = None
    try:
        tool = deployment.pgbackrest()
        tool.verify()
        backups = list(reversed(tool.info().backups))
        marked = next(((b, kept) for b in backups if (kept := read_mark(deployment, b.label))),
                      None)
        if marked is None:
            raise CheckFailed(f"no backup in {deployment.repo} has recorded checksums "
                              f"(take one with `tidefield backup`)")
        backup, (mark, platform_sha256) = marked
        label = backup.label
        state.check(deployment.sidecar(label) / state.ARCHIVE_NAME, platform_sha256)
        base = (scratch_dir or deployment.data_dir / SCRATCH) / label
        shutil.rmtree(base, ignore_errors=True)
        port = free_port()
        cluster = PostgresCluster(base, port=port, conf=SCRATCH_CONF)
        scratch_tool = deployment.pgbackrest(Cluster(cluster.data_dir, port, cluster.data_dir))
        _empty_cluster_folder(base, scratch_tool)
        try:
            scratch_tool.restore(cluster.data_dir, target_type="name",
                                 target=mark.restore_point, backup_set=label, archive=False)
            recover(cluster)
            with psycopg.connect(cluster.url(mark.database), autocommit=True) as conn:
                found = checksums.differences(conn, mark)
        finally:
            cluster.destroy()
        if found:
            raise CheckFailed(f"backup {label} restored to {mark.restore_point} differs from "
                              f"what was recorded: " + "; ".join(found[:10]))
    except (OpsError, psycopg.Error, OSError) as exc:
        record_run(deployment.database_url, "verify", started_wall, ok=False, label=label,
                   detail=str(exc))
        if isinstance(exc, OpsError):
            raise
        raise CheckFailed(f"verifying backup {label or ''} failed: {exc}") from exc
    report = VerifyReport(label, mark.restore_point, len(mark.chunks), mark.rows,
                          time.monotonic() - started)
    record_run(deployment.database_url, "verify", started_wall, ok=True, label=label,
               detail=f"{report.chunks} chunks, {report.rows} rows as recorded")
    return report
