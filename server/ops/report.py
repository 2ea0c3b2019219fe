"""How the operations are doing, read in one go: the newest backup and check and whether
a newer attempt failed (``backup_runs``), WAL archiving (``pg_stat_archiver``), the
replica and its lag, and the disks. `tidefield status` renders it, /metrics exports it
(``tidefield.server.ops.metrics``); both answer even when the database does not."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from tidefield.server.db import one_row, scalar

from .disk import LOW_FREE_RATIO, Volume, platform_volumes
from .replica import ReplicaState, replica_state


@dataclass(frozen=True, slots=True)
class RunState:
    """The newest successful run of an action, and the newest attempt if it failed."""

    last_ok_at: datetime | None = None
    last_ok_label: str | None = None
    failed_at: datetime | None = None  # only when newer than the last success
    failed_detail: str | None = None


@dataclass(frozen=True, slots=True)
class ArchiveState:
    archived: int
    failed: int
    last_archived_at: datetime | None
    last_failed_at: datetime | None
    last_failed_wal: str | None
    enabled: bool

    @property
    def failing(self) -> bool:
        """The newest attempt failed (PostgreSQL keeps trying; WAL piles up meanwhile)."""
        return self.last_failed_at is not None and (
            self.last_archived_at is None or self.last_failed_at > self.last_archived_at)


@dataclass(frozen=True, slots=True)
class OpsReport:
    backup: RunState | None = None
    verify: RunState | None = None
    archive: ArchiveState | None = None
    replica: ReplicaState | None = None
    volumes: list[Volume] = field(default_factory=list)
    problem: str | None = None  # the database did not answer


def _run_state(conn: psycopg.Connection, action: str) -> RunState:
    ok = conn.execute("SELECT finished_at, label FROM backup_runs WHERE action = %s AND ok "
                      "ORDER BY finished_at DESC LIMIT 1", (action,)).fetchone()
    failed = conn.execute(
        "SELECT finished_at, detail FROM backup_runs WHERE action = %s AND NOT ok AND "
        "finished_at > coalesce(%s::timestamptz, '-infinity') ORDER BY finished_at DESC LIMIT 1",
        (action, ok[0] if ok else None)).fetchone()
    return RunState(ok[0] if ok else None, ok[1] if ok else None,
                    failed[0] if failed else None, failed[1] if failed else None)


def collect(database_url: str | None, *, read_url: str | None = None,
            data_dir: Path | None = None, repo: Path | None = None) -> OpsReport:
    backup = verify = archive = None
    problem = None
    if database_url:
        try:
            with psycopg.connect(database_url, connect_timeout=3, autocommit=True,
                                 options="-c statement_timeout=3000") as conn:
                has_runs = scalar(conn.execute("SELECT to_regclass('backup_runs') IS NOT NULL"))
                if has_runs:
                    backup, verify = _run_state(conn, "backup"), _run_state(conn, "verify")
                archive = ArchiveState(*one_row(conn.execute(
                    "SELECT archived_count, failed_count, last_archived_time, "
                    "last_failed_time, last_failed_wal, current_setting('archive_mode') <> "
                    "'off' FROM pg_stat_archiver")))
        except psycopg.Error as exc:
            problem = f"database: {str(exc).strip().splitlines()[0]}"
    replica = replica_state(read_url, database_url) if read_url else None
    volumes = platform_volumes(data_dir, repo) if data_dir is not None else []
    return OpsReport(backup, verify, archive, replica, volumes, problem)


def _age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.0f} s ago"


def render(report: OpsReport, now: datetime | None = None) -> list[str]:
    """Lines for `tidefield status`."""
    now = now or datetime.now(UTC)
    lines = []
    if report.backup is not None:
        b = report.backup
        line = f"backup     newest {b.last_ok_label or '-'} {_age(b.last_ok_at, now)}"
        if report.verify is not None and report.verify.last_ok_at is not None:
            line += f"; verified {_age(report.verify.last_ok_at, now)}"
        if b.failed_at is not None:
            line += f"; FAILED {_age(b.failed_at, now)}: {(b.failed_detail or '')[:160]}"
        lines.append(line)
    if report.archive is not None and report.archive.enabled:
        a = report.archive
        line = (f"archive    {a.archived} WAL segments, newest {_age(a.last_archived_at, now)}"
                f"{', FAILING since ' + _age(a.last_failed_at, now) if a.failing else ''}")
        lines.append(line)
    if report.replica is not None:
        r = report.replica
        if not r.reachable or r.problem:
            lines.append(f"replica    {r.problem}")
        else:
            lag = f"{r.lag_s:.1f} s" if r.lag_s is not None else "?"
            lines.append(f"replica    streaming, {lag} behind"
                         + (f" ({r.lag_bytes:,} bytes of WAL)" if r.lag_bytes else ""))
    by_device: dict[int, list[Volume]] = {}
    for volume in report.volumes:  # folders on one disk: one line
        by_device.setdefault(volume.device, []).append(volume)
    for volumes in by_device.values():
        volume = volumes[0]
        warn = "  LOW" if volume.free_ratio < LOW_FREE_RATIO else ""
        lines.append(f"disk       {volume.free_bytes / 2**30:.1f} GiB free of "
                     f"{volume.size_bytes / 2**30:.1f} ({volume.free_ratio:.0%}){warn}: "
                     + ", ".join(v.name for v in volumes))
    if report.problem:
        lines.append(f"problem    {report.problem}")
    return lines


def as_dict(report: OpsReport) -> dict:
    data = asdict(report)
    data["volumes"] = [{**asdict(v), "path": str(v.path), "free_ratio": v.free_ratio}
                       for v in report.volumes]
    if report.archive is not None:
        data["archive"]["failing"] = report.archive.failing
    return data
