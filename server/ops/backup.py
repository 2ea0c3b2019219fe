"""Taking backups: one now (`tidefield backup`), or on a schedule (what `tidefield up`
runs as its ``backup`` child).

A backup is three things, in this order:

1. pgBackRest's backup of the cluster (full, or incremental on the newest), after which
   it expires what the retention no longer keeps;
2. its mark: row counts and checksums of the newest chunks, taken at a named restore
   point (``tidefield.server.ops.checksums``), then a WAL switch that pgBackRest waits
   to see archived, so the point is in the repository too;
3. beside it in the repository, the mark and the platform's files (broker state, keys;
   ``tidefield.server.ops.state``).

Each attempt, failed or not, is a row of ``backup_runs`` (when the database answers).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from . import checksums, state
from .deployment import Deployment
from .errors import OpsError
from .pgbackrest import BackupSet, PgBackRest

log = logging.getLogger(__name__)

MARK_NAME = "mark.json"
SCHEDULE_POLL_S = 60.0  # how often the schedule looks at the newest backup's age
RETRY_AFTER_S = 900.0  # after a failed scheduled backup (or check)


@dataclass(frozen=True, slots=True)
class BackupResult:
    backup: BackupSet
    mark: checksums.Mark
    files: int  # platform files kept beside it


def choose_kind(tool: PgBackRest, full_every_days: float,
                now: datetime | None = None) -> str:
    """Full when there is none, or the newest is ``full_every_days`` old; else incremental."""
    newest_full = tool.info().newest_full()
    now = now or datetime.now(UTC)
    if newest_full is None or now - newest_full.stopped >= timedelta(days=full_every_days):
        return "full"
    return "incr"


def take_backup(deployment: Deployment, kind: str = "auto") -> BackupResult:
    """One backup of the deployment's database, marked, with the platform's files."""
    started = datetime.now(UTC)
    label = None
    try:
        tool = deployment.pgbackrest()
        tool.stanza_create()
        if kind == "auto":
            kind = choose_kind(tool, deployment.full_every_days)
        backup = tool.backup(kind)
        label = backup.label
        with psycopg.connect(deployment.database_url, autocommit=True) as conn:
            mark = checksums.take_mark(conn, f"tidefield-{label}", deployment.check_chunks)
        tool.check()  # the restore point's WAL segment is in the repository
        folder = deployment.sidecar(label)
        digest = state.save(deployment.layout, folder / state.ARCHIVE_NAME)
        (folder / MARK_NAME).write_text(json.dumps(
            {"mark": json.loads(mark.to_json()), "platform_sha256": digest}, indent=1))
        files = len(state.check(folder / state.ARCHIVE_NAME, digest))
        prune_sidecars(deployment, tool)
    except (OpsError, psycopg.Error, OSError) as exc:
        record_run(deployment.database_url, "backup", started, ok=False, label=label,
                   kind=None if kind == "auto" else kind, detail=str(exc))
        if isinstance(exc, OpsError):
            raise
        step = "recording its checksums" if isinstance(exc, psycopg.Error) else \
            "keeping the platform's files"
        raise OpsError(f"backup {label or ''} failed while {step}: "
                       f"{str(exc).strip()}") from exc
    record_run(deployment.database_url, "backup", started, ok=True, label=label,
               kind=backup.kind, database_bytes=backup.database_bytes,
               repository_bytes=backup.repository_bytes,
               detail=f"{len(mark.chunks)} chunks, {mark.rows} rows marked at "
                      f"{mark.restore_point}; {files} platform files")
    return BackupResult(backup, mark, files)


def read_mark(deployment: Deployment, label: str) -> tuple[checksums.Mark, str] | None:
    """The mark of backup ``label`` and the checksum of its platform files, if recorded."""
    try:
        raw = json.loads((deployment.sidecar(label) / MARK_NAME).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OpsError(f"the checksums kept with backup {label} are unreadable: {exc}") \
            from exc
    return checksums.Mark.from_json(json.dumps(raw["mark"])), raw["platform_sha256"]


def prune_sidecars(deployment: Deployment, tool: PgBackRest) -> list[str]:
    """Remove the kept files of backups that pgBackRest's retention expired."""
    live = {b.label for b in tool.info().backups}
    root = deployment.repo / "tidefield" / deployment.stanza
    gone = [p for p in root.iterdir() if p.is_dir() and p.name not in live] \
        if root.is_dir() else []
    for folder in gone:
        shutil.rmtree(folder, ignore_errors=True)
    return [p.name for p in gone]


def record_run(database_url: str, action: str, started: datetime, *, ok: bool,
               label: str | None = None, kind: str | None = None,
               database_bytes: int | None = None, repository_bytes: int | None = None,
               detail: str = "") -> None:
    """A row of ``backup_runs``; a database that does not answer only costs the row."""
    try:
        with psycopg.connect(database_url, connect_timeout=5, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO backup_runs (action, started_at, ok, label, kind, "
                "database_bytes, repository_bytes, detail) VALUES (%s, %s, %s, %s, %s, %s, "
                "%s, %s)", (action, started, ok, label, kind, database_bytes,
                            repository_bytes, detail[:4000]))
    except psycopg.Error as exc:
        log.warning("could not record the %s run: %s", action, str(exc).strip())


class Schedule:
    """`tidefield up`'s backups: the first at once (there is none yet), then one whenever
    the newest is ``every_h`` old; a weekly full one. ``verify_every_days`` (0: never):
    how often the newest backup is also restored and compared."""

    def __init__(self, deployment: Deployment, *, every_h: float,
                 verify_every_days: float = 0.0) -> None:
        self.deployment = deployment
        self.every = timedelta(hours=every_h)
        self.verify_every = timedelta(days=verify_every_days) if verify_every_days else None
        self._last_verify: datetime | None = None

    def due(self, tool: PgBackRest, now: datetime) -> bool:
        newest = tool.info().newest
        return newest is None or now - newest.stopped >= self.every

    def _newest_verify(self) -> datetime:
        """When the newest check passed; a first start counts as one (a check right
        after the first backup would only restore what was just written)."""
        try:
            with psycopg.connect(self.deployment.database_url, connect_timeout=5) as conn:
                row = conn.execute("SELECT max(finished_at) FROM backup_runs "
                                   "WHERE action = 'verify' AND ok").fetchone()
        except psycopg.Error:
            row = None
        return row[0] if row and row[0] else datetime.now(UTC)

    def run(self, stop: threading.Event) -> None:
        from .restore import verify

        tool = self.deployment.pgbackrest()
        tool.stanza_create()
        self._last_verify = self._newest_verify()
        while not stop.is_set():
            wait = SCHEDULE_POLL_S
            try:
                now = datetime.now(UTC)
                if self.due(tool, now):
                    result = take_backup(self.deployment)
                    log.warning("backup %s (%s) taken: %.1f MB in the repository",
                                result.backup.label, result.backup.kind,
                                result.backup.repository_bytes / 1e6)
                elif self.verify_every is not None and \
                        now - (self._last_verify or now) >= self.verify_every:
                    report = verify(self.deployment)
                    self._last_verify = now
                    log.warning("backup %s verified: %d chunks, %d rows as recorded",
                                report.label, report.chunks, report.rows)
            except OpsError as exc:
                log.error("scheduled backup failed; trying again in %.0f min: %s",
                          RETRY_AFTER_S / 60, exc)
                wait = RETRY_AFTER_S
            started = time.monotonic()
            stop.wait(max(0.0, wait - (time.monotonic() - started)))
