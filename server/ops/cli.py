"""`tidefield backup`, `tidefield restore`, `tidefield replica`: the operations' commands,
a Typer app that the `tidefield` command mounts by name. Each command imports its
machinery when it runs."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tidefield.server.settings import OpsSettings

app = typer.Typer(help="Backups, restores and the read replica.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
backup_app = typer.Typer(help="Backups with pgBackRest: `tidefield backup` takes one now.",
                         pretty_exceptions_enable=False)
replica_app = typer.Typer(help="The streaming read replica.", no_args_is_help=True)
app.add_typer(backup_app, name="backup")
app.add_typer(replica_app, name="replica")

DataDir = Annotated[Path | None, typer.Option(
    help="the data folder of `tidefield up` (default: TIDEFIELD_DATA_DIR)")]
Repo = Annotated[Path | None, typer.Option(
    help="the pgBackRest repository folder (default: TIDEFIELD_BACKUP_REPO, else "
         "DATA_DIR/backup)")]


def _settings(**options: Any) -> OpsSettings:
    from tidefield.protocol.settings import load
    from tidefield.server import logs
    from tidefield.server.settings import OpsSettings

    settings = load(OpsSettings, **options)
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@backup_app.callback(invoke_without_command=True)
def backup(ctx: typer.Context,
           kind: Annotated[str, typer.Option(
               help="full, incr (on the newest), diff (on the newest full), or auto: full "
                    "when the newest full one is TIDEFIELD_BACKUP_FULL_EVERY_DAYS old")]
           = "auto",
           data_dir: DataDir = None, repo: Repo = None) -> None:
    """Take a backup now: the database (pgBackRest), the checksums of its newest chunks,
    and the broker's state and the platform's keys beside it."""
    if ctx.invoked_subcommand is not None:
        return
    from tidefield.server.ops import OpsError
    from tidefield.server.ops.backup import take_backup
    from tidefield.server.ops.deployment import Deployment

    if kind not in ("auto", "full", "incr", "diff"):
        typer.echo("error: --kind must be auto, full, incr or diff", err=True)
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir, backup_repo=repo)
    try:
        result = take_backup(Deployment.from_settings(settings), kind)
    except OpsError as exc:
        raise _fail(exc) from None
    b = result.backup
    typer.echo(f"backup {b.label} ({b.kind}): {b.database_bytes / 1e6:,.1f} MB of database, "
               f"{b.repository_bytes / 1e6:,.1f} MB written to the repository; "
               f"{len(result.mark.chunks)} chunks ({result.mark.rows:,} rows) checksummed; "
               f"{result.files} platform files kept")


@backup_app.command("list")
def backup_list(data_dir: DataDir = None, repo: Repo = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The backups in the repository, and the span a restore can reach."""
    import json

    from tidefield.server.ops import OpsError
    from tidefield.server.ops.backup import read_mark
    from tidefield.server.ops.deployment import Deployment

    settings = _settings(data_dir=data_dir, backup_repo=repo)
    deployment = Deployment.from_settings(settings)
    try:
        info = deployment.pgbackrest().info()
    except OpsError as exc:
        raise _fail(exc) from None
    rows = [{"label": b.label, "kind": b.kind, "started": b.started.isoformat(),
             "stopped": b.stopped.isoformat(), "database_bytes": b.database_bytes,
             "repository_bytes": b.repository_bytes,
             "checksums": read_mark(deployment, b.label) is not None} for b in info.backups]
    if as_json:
        typer.echo(json.dumps({"repository": str(deployment.repo), "status": info.status,
                               "wal": [info.wal_min, info.wal_max], "backups": rows},
                              indent=1))
        return
    typer.echo(f"repository {deployment.repo} (stanza {deployment.stanza}): {info.status}")
    for b in info.backups:
        typer.echo(f"  {b.label:<26}{b.kind:<5} {b.stopped:%Y-%m-%d %H:%M:%S} UTC  "
                   f"{b.database_bytes / 1e6:10,.1f} MB  {b.repository_bytes / 1e6:9,.1f} MB "
                   f"in repo")
    if info.backups:
        typer.echo(f"restorable: from {info.backups[0].stopped:%Y-%m-%d %H:%M:%S} UTC to the "
                   f"newest archived WAL ({info.wal_max})")


@backup_app.command("verify")
def backup_verify(data_dir: DataDir = None, repo: Repo = None,
                  scratch: Annotated[Path | None, typer.Option(
                      help="folder for the scratch cluster (default DATA_DIR/verify-scratch; "
                           "needs the database's size free)")] = None) -> None:
    """Check every file in the repository, restore the newest backup into a scratch
    cluster and compare its row counts and checksums with those recorded; exit 1 when
    anything differs."""
    from tidefield.server.ops import OpsError
    from tidefield.server.ops.deployment import Deployment
    from tidefield.server.ops.restore import verify

    settings = _settings(data_dir=data_dir, backup_repo=repo)
    try:
        report = verify(Deployment.from_settings(settings), scratch)
    except OpsError as exc:
        typer.echo(f"verify FAILED: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"backup {report.label} verified: restored to {report.restore_point}, "
               f"{report.chunks} chunks ({report.rows:,} rows) and the registry as recorded, "
               f"platform files intact ({report.seconds:.1f} s)")


@backup_app.command("check")
def backup_check(data_dir: DataDir = None, repo: Repo = None) -> None:
    """Archive the database's current WAL now and check that it reached the repository
    (pgBackRest's check): a restore can then reach this moment. Run it right after a
    mistake, before restoring to the moment before it."""
    from tidefield.server.ops import OpsError
    from tidefield.server.ops.deployment import Deployment

    settings = _settings(data_dir=data_dir, backup_repo=repo)
    tool = Deployment.from_settings(settings).pgbackrest()
    try:
        tool.check()
        info = tool.info()
    except OpsError as exc:
        raise _fail(exc) from None
    typer.echo(f"archiving works: WAL up to {info.wal_max} is in {tool.repo}")


@backup_app.command("settings")
def backup_settings(data_dir: DataDir = None, repo: Repo = None) -> None:
    """Print the postgresql.conf lines that archive a database's WAL to the repository
    and let a replica follow it: for a database that `tidefield up` does not run
    (TIDEFIELD_BACKUP_PG_PATH), whose server must be restarted after adding them."""
    from tidefield.server.ops.deployment import Deployment
    from tidefield.server.ops.replica import primary_settings

    settings = _settings(data_dir=data_dir, backup_repo=repo)
    tool = Deployment.from_settings(settings).pgbackrest()
    lines = {**tool.archive_settings(), **primary_settings(settings.replica_max_slot_wal_gb)}
    typer.echo(f"# archiving to {tool.repo} (stanza {tool.stanza}); pgBackRest's config "
               f"is {tool.config_file}")
    for name, value in lines.items():
        typer.echo(f"{name} = {value}")


@backup_app.command("schedule", hidden=True)
def backup_schedule(data_dir: DataDir = None) -> None:
    """Take backups on the schedule until stopped (what `tidefield up` runs)."""
    from tidefield.server.ops.backup import Schedule
    from tidefield.server.ops.deployment import Deployment

    settings = _settings(data_dir=data_dir)
    stop = _stop_on_signals()
    Schedule(Deployment.from_settings(settings), every_h=settings.backup_every_h,
             verify_every_days=settings.backup_verify_every_days).run(stop)


@app.command()
def restore(to: Annotated[str, typer.Option(
                "--to", help="`latest`, or a time with its zone: '2026-03-01 09:30:00+08:00'")],
            data_dir: Annotated[Path | None, typer.Option(
                help="the NEW data folder to fill (default: TIDEFIELD_DATA_DIR); "
                     "refused when it holds a database")] = None,
            repo: Repo = None,
            backup_set: Annotated[str | None, typer.Option(
                "--set", help="restore from this backup (default: the newest that ended "
                              "before --to)")] = None) -> None:
    """Restore the database as it was at a moment, with the broker's state and the keys,
    into a fresh data folder; then `tidefield up --data-dir` runs on it."""
    from tidefield.server.ops import OpsError
    from tidefield.server.ops.deployment import Deployment
    from tidefield.server.ops.restore import parse_target
    from tidefield.server.ops.restore import restore as run_restore

    settings = _settings(data_dir=data_dir, backup_repo=repo)
    try:
        target = parse_target(to)
        report = run_restore(Deployment.from_settings(settings), target, backup_set=backup_set,
                             say=lambda text: typer.echo(text, err=True))
    except OpsError as exc:
        raise _fail(exc) from None
    newest = f"{report.newest_reading:%Y-%m-%d %H:%M:%S} UTC" if report.newest_reading \
        else "none"
    received = f"{report.last_received:%Y-%m-%d %H:%M:%S} UTC" if report.last_received \
        else "none"
    typer.echo(f"restored into {report.data_dir}: about {report.readings_estimate:,} "
               f"readings, the newest of {newest}; the last message stored was received "
               f"{received}; {report.platform_files} platform files from backup "
               f"{report.backup.label}")
    typer.echo(f"next: tidefield up --data-dir {report.data_dir}")


@replica_app.command("run")
def replica_run(data_dir: DataDir = None) -> None:
    """Run the read replica in the foreground until stopped (what `tidefield up
    --replica` runs): a copy of the primary on first start, then a streaming standby."""
    from tidefield.server.ops import OpsError
    from tidefield.server.ops.deployment import REPLICA, Deployment
    from tidefield.server.ops.replica import Replica

    settings = _settings(data_dir=data_dir)
    deployment = Deployment.from_settings(settings)
    archive = deployment.pgbackrest() if settings.backup_archive else None
    replica = Replica(deployment.data_dir / REPLICA, port=settings.embedded_replica_port,
                      primary_url=deployment.database_url, archive=archive)
    stop = _stop_on_signals()
    try:
        code = replica.run(stop)
    except OpsError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def _replica_url(settings: OpsSettings) -> str:
    """TIDEFIELD_DATABASE_READ_URL, else the embedded replica's."""
    from tidefield.server.ops.deployment import DATABASE

    return settings.database_read_url or (
        f"postgresql://postgres@127.0.0.1:{settings.embedded_replica_port}/{DATABASE}")


@replica_app.command("status")
def replica_status(data_dir: DataDir = None) -> None:
    """Whether the replica streams, and how far behind the primary it is; exit 1 when it
    is unreachable or not streaming."""
    from tidefield.server.ops.deployment import Deployment
    from tidefield.server.ops.replica import replica_state

    settings = _settings(data_dir=data_dir)
    deployment = Deployment.from_settings(settings)
    state = replica_state(_replica_url(settings), deployment.database_url)
    if state.problem:
        typer.echo(f"replica: {state.problem}", err=True)
        raise typer.Exit(1)
    typer.echo(f"replica streaming, {state.lag_s or 0:.1f} s and {state.lag_bytes or 0:,} "
               f"bytes of WAL behind")


@replica_app.command("promote")
def replica_promote(data_dir: DataDir = None) -> None:
    """Make the replica the primary (when the primary is lost): it stops following and
    takes writes. docs/runbook.md says what comes before and after."""
    from tidefield.server.ops import OpsError
    from tidefield.server.ops.replica import promote

    settings = _settings(data_dir=data_dir)
    url = _replica_url(settings)
    try:
        promote(url)
    except OpsError as exc:
        raise _fail(exc) from None
    typer.echo(f"promoted: {url} takes writes now")
