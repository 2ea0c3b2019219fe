"""``tidefield sim``: the simulator's commands (a Typer app the main CLI mounts).

    tidefield sim scenario --days 30 --seed 7 --out DIR [--format csv|parquet] [--no-inject]
    tidefield sim modbus --port 5020 --site ag-001 [--site oc-021 ...] [--fault 2=ffff]
    tidefield sim show --site oc-021 [--at 2025-04-01T06:00:00Z]
    tidefield sim fleet --mqtt-url mqtt://127.0.0.1:1883 [--backfill-days 7] [--tick 10]

Heavy imports happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tidefield.protocol.units import DAY_MS

if TYPE_CHECKING:
    from tidefield.protocol.registry import Site

    from .fleet import Fleet
    from .scenario import ScenarioSummary

app = typer.Typer(help="Simulated fleet: labelled scenarios, Modbus devices, live values.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

DEFAULT_START = "2025-04-01T00:00:00Z"  # spring: frosts possible, irrigation season on
STOP_DRAIN_S = 5.0  # on stop, how long the fleet waits for its last receipts

Seed = Annotated[int, typer.Option(help="random seed: the same seed gives the same data")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="log progress to stderr")]
Inject = Annotated[bool, typer.Option("--inject/--no-inject",
                                      help="inject labelled faults and events")]


def _configure_logging(verbose: bool) -> None:
    # Quiet by default; only configure when nobody (e.g. the main CLI) did already.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: "
                            "%(message)s")
    root.setLevel(logging.INFO if verbose else logging.WARNING)


def parse_time_ms(text: str) -> int:
    """ISO-8601 date or date-time to ms; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO-8601 date or time: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _sites(ids: list[str] | None) -> Sequence[Site]:
    from tidefield.protocol.registry import load_sites

    sites = load_sites()
    if not ids:
        return sites
    wanted = {i for item in ids for i in item.split(",") if i}
    chosen = [s for s in sites if s.id in wanted or s.kind in wanted]
    unknown = wanted - {s.id for s in chosen} - {s.kind for s in chosen}
    if unknown:
        raise typer.BadParameter(f"unknown site ids or kinds: {', '.join(sorted(unknown))}")
    return chosen


@app.command()
def scenario(
    out: Annotated[Path, typer.Option(help="directory to write (created if missing)")],
    days: Annotated[float, typer.Option(min=0.001, help="length of the window in days")] = 30.0,
    seed: Seed = 0,
    start: Annotated[str, typer.Option(help="first instant, ISO-8601 (UTC if no zone)")] =
        DEFAULT_START,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    inject: Inject = True,
    faults_per_series: Annotated[float, typer.Option(
        help="expected sensor faults per series per 30 days")] = 0.5,
    events_per_site: Annotated[float, typer.Option(
        help="expected real events per eligible site per 30 days")] = 1.0,
    site: Annotated[list[str] | None, typer.Option(
        help="only these site ids or kinds (repeat or comma-separate)")] = None,
    chunk_hours: Annotated[float, typer.Option(min=0.1, help="readings per write")] = 6.0,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="progress bar on stderr (default: if a terminal)")]
        = None,
    verbose: Verbose = False,
) -> None:
    """Backfill a labelled scenario: readings and labels files for a window."""
    from .fleet import Fleet
    from .scenario import FORMATS, scenario_plan, write_scenario

    _configure_logging(verbose)
    if fmt not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    start_ms = parse_time_ms(start)
    end_ms = start_ms + round(days * DAY_MS)
    plan = (scenario_plan(start_ms, end_ms, faults_per_series=faults_per_series,
                          events_per_site=events_per_site) if inject else None)
    fleet = Fleet(_sites(site), seed=seed, plan=plan)
    show = sys.stderr.isatty() if progress is None else progress
    if show:
        summary = _with_progress(fleet, out, start_ms, end_ms, fmt, chunk_hours)
    else:
        summary = write_scenario(fleet, out, start_ms, end_ms, fmt=fmt,
                                 chunk_ms=round(chunk_hours * 3_600_000))
    typer.echo(f"{summary.readings} readings and {summary.labels} labels in {out}")


def _with_progress(fleet: Fleet, out: Path, start_ms: int, end_ms: int, fmt: str,
                   chunk_hours: float) -> ScenarioSummary:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .scenario import write_scenario

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("planning", total=end_ms - start_ms)

        def advance(readings: int, done_ms: int) -> None:
            bar.update(task, completed=done_ms, description=f"{readings:,} readings")

        return write_scenario(fleet, out, start_ms, end_ms, fmt=fmt,
                              chunk_ms=round(chunk_hours * 3_600_000), progress=advance)


@app.command()
def modbus(
    site: Annotated[list[str], typer.Option(help="serve the devices of these sites")],
    port: Annotated[int, typer.Option(help="TCP port")] = 5020,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    seed: Seed = 0,
    inject: Inject = True,
    start: Annotated[str | None, typer.Option(
        help="run the simulated clock from this instant (default: the wall clock)")] = None,
    fault: Annotated[list[str] | None, typer.Option(
        help="force a fault on a unit: UNIT=MODE, MODE one of ffff, zero, exception, "
             "timeout (repeatable)")] = None,
    verbose: Verbose = False,
) -> None:
    """Emulate the sites' devices as Modbus TCP units until Ctrl-C."""
    import time

    from .events import InjectionPlan
    from .fleet import Fleet
    from .modbus import describe, emulated_devices, start_modbus_server

    _configure_logging(verbose)
    chosen = _sites(site)
    fleet = Fleet(chosen, seed=seed, plan=InjectionPlan() if inject else None)
    units = emulated_devices(fleet)
    clock = None
    if start is not None:
        offset = parse_time_ms(start) - int(time.time() * 1000)

        def clock() -> int:
            return int(time.time() * 1000) + offset

    typer.echo(f"preparing {len(units)} units...", err=True)
    handle = start_modbus_server(host, port, units, clock=clock)
    for item in fault or []:
        unit, _, mode = item.partition("=")
        try:
            handle.set_fault(int(unit), mode)
        except (ValueError, KeyError) as exc:
            handle.stop()
            raise typer.BadParameter(f"--fault {item!r}: {exc}") from None
    typer.echo(f"Modbus TCP on {host}:{port}")
    for line in describe(units):
        typer.echo(line)
    typer.echo("press Ctrl-C to stop")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        handle.stop()


@app.command()
def show(
    site: Annotated[list[str], typer.Option(help="site ids or kinds")],
    at: Annotated[str | None, typer.Option(help="instant, ISO-8601 (default: now)")] = None,
    seed: Seed = 0,
    inject: Inject = True,
) -> None:
    """Print what every sensor of the sites shows at an instant."""
    import time

    from .events import InjectionPlan
    from .fleet import Fleet

    fleet = Fleet(_sites(site), seed=seed, plan=InjectionPlan() if inject else None)
    t_ms = parse_time_ms(at) if at else int(time.time() * 1000)
    for device in fleet.table.devices:
        for metric, value in fleet.device_values(device.id, t_ms).items():
            shown = "-" if value is None else f"{value:g}"
            typer.echo(f"{device.id}\t{metric}\t{shown}")


@app.command()
def fleet(
    mqtt_url: Annotated[str, typer.Option(envvar="TIDEFIELD_MQTT_URL",
                                          help="broker, mqtt://[user:pass@]host:port")],
    site: Annotated[list[str] | None, typer.Option(
        help="site ids or kinds (repeatable; default: all 250)")] = None,
    seed: Seed = 1,
    inject: Inject = True,
    backfill_days: Annotated[float, typer.Option(
        help="publish this much history first, as fast as the broker takes it")] = 0.0,
    tick: Annotated[float, typer.Option(help="seconds between live publications")] = 10.0,
    events_per_site: Annotated[float, typer.Option(
        min=0, help="injected real events per site per 30 days")] = 1.0,
    faults_per_series: Annotated[float, typer.Option(
        min=0, help="injected sensor faults per series per 30 days")] = 0.5,
    state: Annotated[Path, typer.Option(
        help="where per-device sequence numbers persist across restarts")] = Path(
            ".tidefield/sim-sequences.json"),
    msgpack: Annotated[bool, typer.Option("--msgpack/--json",
                                          help="payload encoding")] = False,
    receipts: Annotated[bool, typer.Option(
        "--receipts/--no-receipts",
        help="keep each batch until ingest's receipt names it, re-sending it after "
             "--receipt-timeout (off: a PUBACK is the end of it)")] = True,
    receipt_timeout: Annotated[float, typer.Option(
        min=0.1, help="seconds to wait for a batch's receipt before sending it again "
                      "(doubling with each send)")] = 30.0,
    verbose: Verbose = False,
) -> None:
    """Publish every site's devices to the broker, live (and optionally their history):
    protocol batches with per-device sequence numbers, retained birth messages, and a last
    will per site gateway."""
    from tidefield.protocol import codec, mqtt

    from .events import InjectionPlan
    from .fleet import Fleet
    from .fleet_publisher import FleetPublisher, SequenceFile, run_fleet

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # first: building the fleet takes a while
        signal.signal(sig, lambda *_: stop.set())
    _configure_logging(verbose)
    sites = _sites(site)
    plan = InjectionPlan(events_per_site=events_per_site,
                         faults_per_series=faults_per_series) if inject else None
    simulated = Fleet(sites, seed=seed, plan=plan)
    publisher = FleetPublisher(mqtt.parse_mqtt_url(mqtt_url), sites,
                               content_type=codec.MSGPACK if msgpack else codec.JSON,
                               receipts=receipts, receipt_timeout_s=receipt_timeout)
    publisher.start()
    publisher.announce()
    backfill_ms = int(backfill_days * DAY_MS)
    bar = None
    if backfill_ms and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("backfill", total=backfill_ms)
    try:
        run_fleet(simulated, publisher, SequenceFile(state), stop=stop,
                  backfill_ms=backfill_ms, tick_s=tick,
                  progress=(lambda done, total: bar.update(task, completed=done))
                  if bar else None)
    finally:
        if bar is not None:
            bar.stop()
        if receipts and not publisher.drain(STOP_DRAIN_S):
            typer.echo(f"{publisher.unreceipted:,} batches had no receipt; the gap view "
                       f"shows them", err=True)
        publisher.stop()
    stats = publisher.stats
    typer.echo(f"published {stats.messages:,} messages, {stats.readings:,} readings",
               err=True)


def main() -> None:  # for `python -m tidefield.sim.cli`
    app()


if __name__ == "__main__":
    main()
