"""pgBackRest, driven through its own command line: the only module that runs it.

A ``PgBackRest`` is a config file written from our settings (the repository folder, the
stanza, the cluster it backs up, retention, compression) and the commands run with it.
pgBackRest does the work: full and incremental backups, WAL archiving (asynchronous, so
PostgreSQL never waits on the repository), retention (``expire`` after each backup),
the repository's checksums (``verify``), restores to a time or a named restore point.

Who runs it: PostgreSQL runs ``archive-push`` as the cluster's owner, so every command
runs as that user too (``postgres`` when we are root, through ``runuser``), and the
repository and pgBackRest's working folders belong to it; a repository written by two
users is one that ``archive-push`` cannot write to at 3 a.m.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import OpsError, ToolFailed
from .owner import give, owner, run_as

log = logging.getLogger(__name__)

CONFIG_NAME = "pgbackrest.conf"
BACKUP_TIMEOUT_S = 6 * 3600.0  # a full backup of a big database takes hours, not days
COMMAND_TIMEOUT_S = 600.0
# pgBackRest's exit code when another of its processes holds the lock the command needs:
# WAL archiving (archive-push, asynchronous) takes the stanza's archive lock for a moment
# at each segment, and a stanza-create or check that meets it fails at once. Seen in CI:
# a restored cluster's first archive-push beside `tidefield up`'s stanza-create.
LOCK_BUSY_EXIT = 50
LOCK_WAIT_S = 60.0
# pgBackRest's stderr lines that are no failure: the embedded cluster keeps its unix
# socket in its data folder, which a backup skips (and says so)
_NOISE = ("exclude special file",)


def binary() -> str:
    found = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
    if not Path(found).exists():
        raise OpsError("pgbackrest not found; run scripts/setup.sh (it installs Debian's "
                       "pgbackrest package)")
    return found


@dataclass(frozen=True, slots=True)
class Cluster:
    """The PostgreSQL cluster pgBackRest backs up: its data folder on this machine, and
    how to reach it (the unix socket, as its owner)."""

    data_dir: Path
    port: int
    socket_dir: Path
    user: str = "postgres"


@dataclass(frozen=True, slots=True)
class BackupSet:
    """One backup in the repository, as ``pgbackrest info`` describes it."""

    label: str
    kind: str  # full, diff, incr
    started: datetime
    stopped: datetime
    database_bytes: int
    repository_bytes: int
    prior: str | None  # the backup an incremental one builds on
    wal_start: str
    wal_stop: str

    @classmethod
    def from_info(cls, raw: dict) -> BackupSet:
        return cls(label=raw["label"], kind=raw["type"],
                   started=datetime.fromtimestamp(raw["timestamp"]["start"], UTC),
                   stopped=datetime.fromtimestamp(raw["timestamp"]["stop"], UTC),
                   database_bytes=int(raw["info"]["size"]),
                   repository_bytes=int(raw["info"]["repository"]["delta"]),
                   prior=raw.get("prior"), wal_start=raw["archive"]["start"],
                   wal_stop=raw["archive"]["stop"])


@dataclass(frozen=True, slots=True)
class RepositoryInfo:
    """What the repository holds for the stanza: backups, oldest first, and the span of
    archived WAL (None when there is none)."""

    backups: tuple[BackupSet, ...]
    wal_min: str | None
    wal_max: str | None
    status: str  # pgBackRest's own word: "ok", "no valid backups", "missing stanza path"...

    @property
    def newest(self) -> BackupSet | None:
        return self.backups[-1] if self.backups else None

    def newest_full(self) -> BackupSet | None:
        fulls = [b for b in self.backups if b.kind == "full"]
        return fulls[-1] if fulls else None


def time_target(moment: datetime) -> str:
    """A moment as pgBackRest's ``--target`` for ``--type=time`` wants it: UTC with
    milliseconds, rounded down (a target a fraction late could take in the mistake)."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}+00"


class PgBackRest:
    """The repository ``repo`` holding the backups of ``cluster`` under ``stanza``;
    pgBackRest's config, logs, locks and spool live in ``work_dir``."""

    def __init__(self, *, repo: Path, stanza: str, work_dir: Path,
                 cluster: Cluster | None = None, retention_full: int = 2,
                 compress: str = "lz4") -> None:
        self.repo = Path(repo).resolve()
        self.stanza = stanza
        self.work_dir = Path(work_dir).resolve()
        self.cluster = cluster
        self.retention_full = retention_full
        self.compress = compress
        self.config_file = self.work_dir / CONFIG_NAME
        self._owner = owner(cluster.user if cluster else "postgres")

    # --- files --------------------------------------------------------------------------

    def prepare(self) -> None:
        """Write the config and make the folders, owned by the cluster's user."""
        for folder in (self.repo, self.work_dir / "log", self.work_dir / "lock",
                       self.work_dir / "spool", self.work_dir / "conf.d"):
            folder.mkdir(parents=True, exist_ok=True)
            self._own(folder)
        self._own(self.work_dir)
        lines = ["[global]", f"repo1-path={self.repo}",
                 f"repo1-retention-full={self.retention_full}",
                 f"compress-type={self.compress}",
                 f"log-path={self.work_dir / 'log'}", f"lock-path={self.work_dir / 'lock'}",
                 f"spool-path={self.work_dir / 'spool'}",
                 # PostgreSQL hands a segment over and goes on; a queue in the spool folder
                 # takes it to the repository (several at once)
                 "archive-async=y", "process-max=2",
                 "start-fast=y", "log-level-console=off", "log-level-stderr=warn",
                 "log-level-file=warn", "", f"[{self.stanza}]"]
        if self.cluster is not None:
            lines += [f"pg1-path={self.cluster.data_dir}", f"pg1-port={self.cluster.port}",
                      f"pg1-socket-path={self.cluster.socket_dir}",
                      f"pg1-user={self.cluster.user}"]
        self.config_file.write_text("\n".join(lines) + "\n")
        self.config_file.chmod(0o644)

    def _own(self, path: Path) -> None:
        give(path, self._owner)

    def own_tree(self, path: Path) -> None:
        """Give ``path`` and everything under it to the cluster's user (a restore target)."""
        give(path, self._owner, tree=True)

    def command_line(self, *args: str) -> list[str]:
        return [binary(), f"--config={self.config_file}",
                f"--config-include-path={self.work_dir / 'conf.d'}",
                f"--stanza={self.stanza}", *args]

    def archive_settings(self) -> dict[str, str]:
        """The PostgreSQL settings that archive every WAL segment to the repository."""
        command = " ".join(shlex.quote(part) for part in self.command_line("archive-push"))
        return {"archive_mode": "on", "wal_level": "replica",
                "archive_command": quoted(f"{command} %p"),
                # a quiet database still closes a segment this often, so the archive (and
                # what a restore can reach) is never more than this behind
                "archive_timeout": "60"}

    # --- commands -----------------------------------------------------------------------

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> str:
        """Run one pgBackRest command; its stdout, or ToolFailed with its own message."""
        argv = self.command_line(*args)
        log.info("running %s", " ".join(argv))
        give_up = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                result = run_as(argv, self._owner, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                raise ToolFailed(f"pgbackrest {args[0]}", -1,
                                 f"no answer after {timeout:.0f} s") from exc
            if result.returncode != LOCK_BUSY_EXIT or time.monotonic() > give_up:
                break
            log.info("pgbackrest %s: its lock is busy (archiving); trying again", args[0])
            time.sleep(0.5)
        problems = [line for line in result.stderr.splitlines()
                    if line.strip() and not any(noise in line for noise in _NOISE)]
        if result.returncode != 0:
            raise ToolFailed(f"pgbackrest {args[0]}", result.returncode,
                             " ".join(line.strip() for line in problems) or result.stdout)
        for line in problems:
            log.warning("pgbackrest %s: %s", args[0], line.strip())
        return result.stdout

    def stanza_create(self) -> None:
        """Make the stanza in the repository (nothing to do when it is there and matches
        the cluster); a repository that holds another cluster's backups is refused."""
        try:
            self.run("stanza-create")
        except ToolFailed as exc:
            hint = (". It holds another database's backups: give this one another folder "
                    "(TIDEFIELD_BACKUP_REPO) or stanza (TIDEFIELD_BACKUP_STANZA)"
                    if "match" in str(exc) else "")
            raise OpsError(f"the backup repository {self.repo} cannot take this database's "
                           f"backups: {exc}{hint}") from exc

    def check(self) -> None:
        """pgBackRest's own check: the cluster's archiving reaches the repository (it
        switches to a new WAL segment and waits until that one is archived)."""
        self.run("check")

    def backup(self, kind: str) -> BackupSet:
        """Take a backup (``full``, ``diff`` or ``incr``); expire what retention drops."""
        if kind not in ("full", "diff", "incr"):
            raise ValueError(f"backup kind must be full, diff or incr, not {kind!r}")
        before = {b.label for b in self.info().backups}
        self.run("backup", f"--type={kind}", timeout=BACKUP_TIMEOUT_S)
        new = [b for b in self.info().backups if b.label not in before]
        if not new:
            raise OpsError("pgbackrest backup succeeded but no new backup is listed")
        return new[-1]

    def info(self) -> RepositoryInfo:
        raw = json.loads(self.run("info", "--output=json") or "[]")
        stanza = next((s for s in raw if s.get("name") == self.stanza), None)
        if stanza is None:
            return RepositoryInfo((), None, None, "missing stanza")
        archives = [a for a in stanza.get("archive", []) if a.get("min")]
        return RepositoryInfo(
            tuple(BackupSet.from_info(b) for b in stanza.get("backup", [])),
            min((a["min"] for a in archives), default=None),
            max((a["max"] for a in archives), default=None),
            stanza.get("status", {}).get("message", "unknown"))

    def verify(self) -> None:
        """pgBackRest's check of the repository: every file of every backup and every
        archived WAL segment against its checksum. ToolFailed names what is wrong."""
        output = self.run("verify", "--output=text", "--verbose")
        # it exits 0 either way: the verdict is in its report
        if re.search(r"^status: (?!ok)|status: invalid", output, re.MULTILINE):
            raise ToolFailed("pgbackrest verify", 0, " ".join(output.split()))

    def restore(self, data_dir: Path, *, target_type: str, target: str | None = None,
                backup_set: str | None = None, archive: bool = True) -> None:
        """Restore into the empty ``data_dir``: recovery to ``target`` (a time, a restore
        point's name) or, with ``target_type="default"``, to the end of the archive; the
        cluster is promoted there. ``archive``: whether the restored cluster archives."""
        args = ["restore", f"--pg1-path={data_dir}", f"--type={target_type}",
                f"--archive-mode={'preserve' if archive else 'off'}"]
        if target is not None:  # (without one, PostgreSQL promotes at the archive's end)
            args += [f"--target={target}", "--target-action=promote"]
        if backup_set is not None:
            args.append(f"--set={backup_set}")
        self.run(*args, timeout=BACKUP_TIMEOUT_S)


def quoted(value: str) -> str:
    """A string setting for postgresql.conf."""
    return "'" + value.replace("'", "''") + "'"
